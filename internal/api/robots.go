package api

func (a *API) robotRoutes() {}
