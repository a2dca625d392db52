package api

// routes registers every endpoint. Each group lives in its own file.
func (a *API) routes() {
	a.userRoutes()
	a.repositoryRoutes()
	a.organizationRoutes()
	a.robotRoutes()
	a.notificationRoutes()
	a.importRoutes()
	a.proxyCacheRoutes()
	a.securityRoutes()
	a.gcRoutes()
	a.policyRoutes()
	a.quotaRoutes()
	a.openAPIRoutes()
}
