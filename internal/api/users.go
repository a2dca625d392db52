package api

func (a *API) userRoutes() {}
