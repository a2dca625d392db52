package api

import (
	"errors"

	"github.com/berth-dev/berth/internal/meta"
)

// createRepositoryRefusal answers the error of the API's CreateRepository
// in namespace ns: a name taken is a 400 (as Quay's), a namespace deleted
// since the handler looked it up a 404, as if it had been gone then.
func createRepositoryRefusal(ns string, err error) error {
	switch {
	case errors.Is(err, meta.ErrExists):
		return badRequest("Repository already exists")
	case errors.Is(err, meta.ErrNamespaceNotFound):
		return notFound("namespace %q not found", ns)
	}
	return err
}
