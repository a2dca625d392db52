package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// noEvaluations is a gate service that no request may reach.
type noEvaluations struct{ t *testing.T }

func (n noEvaluations) EvaluateAs(context.Context, int64, string) (gate.Evaluation, error) {
	n.t.Error("a refused promotion was evaluated")
	return gate.Evaluation{}, nil
}

func (n noEvaluations) Override(context.Context, int64, string, string) (gate.Evaluation, error) {
	n.t.Error("a refused promotion was overridden")
	return gate.Evaluation{}, nil
}

// TestPromoteOntoAnImmutableTag: POST .../promote for a guarded tag that
// exists and that an immutability policy covers is refused with 403 and
// the reason, as every move of an immutable tag is (it was a 500).
func TestPromoteOntoAnImmutableTag(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newUREnv(t, dialect, api.Options{Gates: noEvaluations{t}})
			ctx := context.Background()
			e.user("root", true)
			e.org("acme", e.user("alice", false))
			e.repo("acme/app", "private")
			e.image("acme/app", "15", 10)
			if err := e.db.Gates().PutGate(ctx, meta.Gate{Repository: "acme/app", Tags: []string{"15"}, Config: json.RawMessage(`{"tags":["15"]}`)}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", Repository: "acme/app",
				TagPattern: "^15$", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			d := e.image("acme/app", "", 10)
			for _, body := range []map[string]any{{"digest": d, "tag": "15"}, {"digest": d, "tag": "15", "override_reason": "hotfix"}} {
				r := e.want("root", "POST", "/api/v1/repository/acme/app/promote", body, 403)
				if msg, _ := r.obj(t)["error_message"].(string); !strings.Contains(msg, `tag "15" is immutable (immutability policy`) {
					t.Fatalf("answer %s", r.body)
				}
			}
		})
	}
}
