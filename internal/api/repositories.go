package api

func (a *API) repositoryRoutes() {}
