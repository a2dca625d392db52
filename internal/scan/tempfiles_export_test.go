package scan

// ForgetTempSweep makes the scanner's next job remove the temporary
// directory's leftovers as if the last removal were an hour old, for tests.
func ForgetTempSweep(s *Service) { s.swept.Store(0) }
