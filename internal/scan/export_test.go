package scan

// SetMaxImagePackages lowers the bound on the packages of one image's
// layers (maxImagePackages), for tests.
func SetMaxImagePackages(s *Service, n int) { s.maxImagePackages = n }
