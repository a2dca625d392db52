package web

import (
	"context"
	"errors"
	"net/http"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/notify"
)

// EmailConfirmer confirms an address asked for as a receiver of email
// notifications.
type EmailConfirmer interface {
	ConfirmEmailAuthorization(ctx context.Context, codeHash string) (meta.AuthorizedEmail, error)
}

// confirmEmailForm is Quay's /authrepoemail: the link a confirmation
// mail holds. It only shows a button that posts the code (confirmEmail):
// mail scanners that open every link must not confirm an address its
// owner never looked at.
func (u *UI) confirmEmailForm(w http.ResponseWriter, r *http.Request, v *visitor) error {
	if u.db.Emails == nil {
		return errNotFound
	}
	code := r.URL.Query().Get("code")
	if code == "" || len(code) > 200 {
		return fail(http.StatusBadRequest, invalidCodeMessage)
	}
	u.render(w, r, v, http.StatusOK, "message", "Confirm your address", map[string]any{
		"Message": "Confirm that this address may receive a registry's notifications",
		"Form":    map[string]any{"Action": "/authrepoemail", "Code": code, "Button": "Confirm"},
	})
	return nil
}

const invalidCodeMessage = "This confirmation link is wrong, already used or expired. Ask an administrator of the repository to send a new one."

// confirmEmail confirms the address whose code the form posts. No
// sign-in is needed (the address's owner may have no account): the code
// is the proof; it is used up.
func (u *UI) confirmEmail(w http.ResponseWriter, r *http.Request, v *visitor) error {
	c := u.db.Emails
	if c == nil {
		return errNotFound
	}
	code := r.PostFormValue("code")
	if code == "" || len(code) > 200 {
		return fail(http.StatusBadRequest, invalidCodeMessage)
	}
	ae, err := c.ConfirmEmailAuthorization(r.Context(), notify.HashCode(code))
	if errors.Is(err, meta.ErrEmailAuthorizationInvalid) {
		return fail(http.StatusBadRequest, invalidCodeMessage)
	}
	if err != nil {
		return err
	}
	what := "repository " + ae.Target
	if ae.Scope == meta.ScopeOrganization {
		what = "organization " + ae.Target
	}
	u.log.Info("e-mail address confirmed for notifications", "scope", ae.Scope, "target", ae.Target)
	u.render(w, r, v, http.StatusOK, "message", "Address confirmed",
		map[string]any{"Message": ae.Email + " is confirmed: it may now receive the notifications of " + what + "."})
	return nil
}
