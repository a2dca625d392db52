package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/web"
)

// listedInOrder answers every listing with its cards, in its order, as
// the store answers a sort by last push or size.
type listedInOrder struct{ cards []meta.RepoCard }

func (l listedInOrder) BrowseRepositories(_ context.Context, q meta.BrowseQuery) ([]meta.RepoCard, error) {
	if q.After.Name != "" {
		return nil, nil
	}
	return l.cards, nil
}

func (listedInOrder) Repository(context.Context, string) (meta.RepoInfo, error) {
	return meta.RepoInfo{}, nil
}

// TestRepositoryListGroupsByNamespaceOnlyByName: sorted by last push or
// size, the namespaces interleave: the list is one table without
// namespace headings (each row names its namespace), where before a
// namespace's heading came again each time its rows resumed. Sorted by
// name, each namespace has one heading.
func TestRepositoryListGroupsByNamespaceOnlyByName(t *testing.T) {
	card := func(name string) meta.RepoCard {
		return meta.RepoCard{Name: name, Visibility: "public", State: "NORMAL"}
	}
	for sort, cards := range map[string][]meta.RepoCard{
		"pushed": {card("acme/x"), card("beta/y"), card("acme/z")},
		"size":   {card("acme/x"), card("beta/y"), card("acme/z")},
		"name":   {card("acme/x"), card("acme/z"), card("beta/y")},
	} {
		ui := newUI(t, web.Stores{Repositories: listedInOrder{cards}}, web.Options{})
		status, body := get(t, ui, "/repository?sort="+sort, false)
		if status != http.StatusOK {
			t.Fatalf("sort=%s: GET = %d\n%.2000s", sort, status, body)
		}
		at := -1
		for _, c := range cards {
			i := strings.Index(body, ">"+c.Name+"</a>")
			if i < at {
				t.Errorf("sort=%s: %s is not listed, or not in the store's order", sort, c.Name)
			}
			at = i
		}
		headings := strings.Count(body, "<h2>acme</h2>") + strings.Count(body, "<h2>beta</h2>")
		switch {
		case sort == "name" && (strings.Count(body, "<h2>acme</h2>") != 1 || strings.Count(body, "<h2>beta</h2>") != 1):
			t.Errorf("sort=name: namespace headings acme %d, beta %d; want one each\n%.3000s", strings.Count(body, "<h2>acme</h2>"),
				strings.Count(body, "<h2>beta</h2>"), body)
		case sort != "name" && headings != 0:
			t.Errorf("sort=%s: %d namespace headings over rows not grouped by namespace\n%.3000s", sort, headings, body)
		}
	}
}
