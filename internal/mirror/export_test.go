package mirror

// WithMaxManifests lowers the manifests one copy fetches (a test keeps
// its upstream small).
func (c *Copier) WithMaxManifests(n int) *Copier {
	c.maxManifests = n
	return c
}
