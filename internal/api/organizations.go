package api

func (a *API) organizationRoutes() {}
