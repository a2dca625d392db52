package meta_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestAuthorizedEmails: an address asked for is mailed at most once per
// interval, confirmed by its code once (not by another), counts as
// confirmed for its target only, and goes with its repository or
// organization.
func TestAuthorizedEmails(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, d)
			n := db.Notifications()
			owner, err := db.Users().CreateUser(ctx, meta.User{Username: "owner"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Organizations().CreateOrganization(ctx, "acme", owner.ID); err != nil {
				t.Fatal(err)
			}
			if err := db.Repositories().CreateRepository(ctx, "acme/app", "private", "", "owner", owner.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := n.AuthorizedEmail(ctx, meta.ScopeRepository, "acme/app", "ops@example.com"); !errors.Is(err, meta.ErrEmailAuthorizationNotFound) {
				t.Fatalf("never asked: %v", err)
			}
			a, mail, err := n.RequestEmailAuthorization(ctx, meta.ScopeRepository, "acme/app", "Ops@Example.com", "hash-1")
			if err != nil || !mail || a.Confirmed || a.Email != "ops@example.com" {
				t.Fatalf("request: %+v %v %v", a, mail, err)
			}
			if _, _, err := n.RequestEmailAuthorization(ctx, meta.ScopeRepository, "acme/app", "ops@example.com", "hash-2"); !errors.Is(err, meta.ErrEmailAuthorizationTooSoon) {
				t.Fatalf("second request within the interval: %v", err)
			}
			if _, err := n.ConfirmEmailAuthorization(ctx, "hash-2"); !errors.Is(err, meta.ErrEmailAuthorizationInvalid) {
				t.Fatalf("wrong code: %v", err)
			}
			bad, err := n.UnconfirmedEmails(ctx, meta.ScopeRepository, "acme/app", []string{"ops@example.com", "dev@example.com"})
			if err != nil || len(bad) != 2 {
				t.Fatalf("before confirmation: %v %v", bad, err)
			}
			a, err = n.ConfirmEmailAuthorization(ctx, "hash-1")
			if err != nil || !a.Confirmed || a.Target != "acme/app" || a.Scope != meta.ScopeRepository || a.ConfirmedAt.IsZero() {
				t.Fatalf("confirm: %+v %v", a, err)
			}
			if _, err := n.ConfirmEmailAuthorization(ctx, "hash-1"); !errors.Is(err, meta.ErrEmailAuthorizationInvalid) {
				t.Fatalf("code used twice: %v", err)
			}
			bad, err = n.UnconfirmedEmails(ctx, meta.ScopeRepository, "acme/app", []string{"OPS@example.com", "dev@example.com"})
			if err != nil || len(bad) != 1 || bad[0] != "dev@example.com" {
				t.Fatalf("after confirmation: %v %v", bad, err)
			}
			if bad, _ := n.UnconfirmedEmails(ctx, meta.ScopeOrganization, "acme", []string{"ops@example.com"}); len(bad) != 1 {
				t.Fatalf("confirmed for the repository counts for the organization: %v", bad)
			}
			if _, mail, err := n.RequestEmailAuthorization(ctx, meta.ScopeRepository, "acme/app", "ops@example.com", "hash-3"); err != nil || mail {
				t.Fatalf("request of a confirmed address: mail %v, %v", mail, err)
			}
			// A failed mail is withdrawn: the address may be asked for again.
			if _, _, err := n.RequestEmailAuthorization(ctx, meta.ScopeOrganization, "acme", "dev@example.com", "hash-4"); err != nil {
				t.Fatal(err)
			}
			if err := n.WithdrawEmailAuthorizationRequest(ctx, meta.ScopeOrganization, "acme", "dev@example.com", "hash-4"); err != nil {
				t.Fatal(err)
			}
			if _, err := n.ConfirmEmailAuthorization(ctx, "hash-4"); !errors.Is(err, meta.ErrEmailAuthorizationInvalid) {
				t.Fatalf("withdrawn code: %v", err)
			}
			if _, mail, err := n.RequestEmailAuthorization(ctx, meta.ScopeOrganization, "acme", "dev@example.com", "hash-5"); err != nil || !mail {
				t.Fatalf("request after a withdrawal: %v %v", mail, err)
			}
			// At most MaxPendingEmailAuthorizations unconfirmed per target.
			for i := 1; i < meta.MaxPendingEmailAuthorizations; i++ {
				if _, _, err := n.RequestEmailAuthorization(ctx, meta.ScopeOrganization, "acme", fmt.Sprintf("u%d@example.com", i), fmt.Sprintf("h%d", i)); err != nil {
					t.Fatalf("pending %d: %v", i, err)
				}
			}
			if _, _, err := n.RequestEmailAuthorization(ctx, meta.ScopeOrganization, "acme", "one-more@example.com", "h-more"); !errors.Is(err, meta.ErrTooManyEmailAuthorizations) {
				t.Fatalf("over the bound: %v", err)
			}
			// Requests whose codes expired are forgotten: they no longer
			// count against the bound.
			past := func(d time.Duration) {
				t.Helper()
				if err := db.Exec(ctx, "UPDATE authorized_emails SET requested_at = requested_at - ? WHERE requested_at > 0", d.Microseconds()); err != nil {
					t.Fatal(err)
				}
			}
			past(meta.EmailAuthorizationValid + time.Hour)
			if _, _, err := n.RequestEmailAuthorization(ctx, meta.ScopeOrganization, "acme", "one-more@example.com", "h-more"); err != nil {
				t.Fatalf("after the pending codes expired: %v", err)
			}
			// One address is mailed for one target at most
			// MaxEmailAuthorizationMails times, and for any target at most
			// once per EmailAuthorizationInterval.
			for i := 2; i <= meta.MaxEmailAuthorizationMails; i++ {
				past(meta.EmailAuthorizationInterval)
				if _, mail, err := n.RequestEmailAuthorization(ctx, meta.ScopeOrganization, "acme", "one-more@example.com", fmt.Sprintf("h-more-%d", i)); err != nil || !mail {
					t.Fatalf("mail %d: %v %v", i, mail, err)
				}
			}
			past(meta.EmailAuthorizationInterval)
			if _, _, err := n.RequestEmailAuthorization(ctx, meta.ScopeOrganization, "acme", "one-more@example.com", "h-more-x"); !errors.Is(err, meta.ErrEmailAuthorizationTooSoon) {
				t.Fatalf("mail %d: %v", meta.MaxEmailAuthorizationMails+1, err)
			}
			if _, _, err := n.RequestEmailAuthorization(ctx, meta.ScopeOrganization, "acme", "fresh@example.com", "h-fresh"); err != nil {
				t.Fatal(err)
			}
			if _, _, err := n.RequestEmailAuthorization(ctx, meta.ScopeRepository, "acme/app", "fresh@example.com", "h-fresh-2"); !errors.Is(err, meta.ErrEmailAuthorizationTooSoon) {
				t.Fatalf("the same address for another target at once: %v", err)
			}
			// They go with their repository, and their organization.
			if err := db.Repositories().DeleteRepository(ctx, "acme/app", "owner"); err != nil {
				t.Fatal(err)
			}
			if _, err := n.AuthorizedEmail(ctx, meta.ScopeRepository, "acme/app", "ops@example.com"); !errors.Is(err, meta.ErrEmailAuthorizationNotFound) {
				t.Fatalf("after the repository's deletion: %v", err)
			}
			if err := db.Organizations().DeleteOrganization(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			if _, err := n.AuthorizedEmail(ctx, meta.ScopeOrganization, "acme", "dev@example.com"); !errors.Is(err, meta.ErrEmailAuthorizationNotFound) {
				t.Fatalf("after the organization's deletion: %v", err)
			}
		})
	}
}
