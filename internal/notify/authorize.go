package notify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
)

// ErrNoSMTP is why no confirmation can be mailed: the configuration has
// no SMTP settings.
var ErrNoSMTP = errors.New("e-mail is not configured on this server (no SMTP settings)")

// ConfirmPath is the web UI's page that confirms an address (Quay's).
const ConfirmPath = "/authrepoemail"

// HashCode is how a confirmation code is stored: its SHA-256, in hex.
func HashCode(code string) string {
	h := sha256.Sum256([]byte(code))
	return hex.EncodeToString(h[:])
}

// needsAuthorization reports whether the email notifications of scope
// mail only confirmed addresses: a registry-wide one is created by a
// superuser, and needs none.
func needsAuthorization(scope string) bool {
	return scope == meta.ScopeRepository || scope == meta.ScopeOrganization
}

// AuthorizeHint says how to authorize an address for a target.
func AuthorizeHint(scope, target string) string {
	kind := "repository"
	if scope == meta.ScopeOrganization {
		kind = "organization"
	}
	return fmt.Sprintf("POST /api/v1/%s/%s/authorizedemail/{address} mails each address a confirmation link; its owner must open it", kind, target)
}

// targetName is "repository acme/app" or "organization acme".
func targetName(scope, target string) string {
	if scope == meta.ScopeOrganization {
		return "organization " + target
	}
	return "repository " + target
}

// ParseAuthorizedEmail checks an address to authorize: one address, no
// display name, no comment.
func ParseAuthorizedEmail(addr string) (string, error) {
	a, err := mail.ParseAddress(addr)
	if err != nil || a.Name != "" || a.Address != addr || len(addr) > 254 {
		return "", invalid("%q is not one e-mail address (give the bare address, as user@example.com)", addr)
	}
	return a.Address, nil
}

// RequestEmailAuthorization mails addr a link that confirms it as a
// receiver of the target's email notifications, and returns its
// authorization. An address already confirmed is returned as it is,
// nothing mailed. Errors: an *InvalidError (the address), ErrNoSMTP,
// meta.ErrEmailAuthorizationTooSoon, meta.ErrTooManyEmailAuthorizations,
// or the relay's.
func (s *Service) RequestEmailAuthorization(ctx context.Context, scope, target, addr string) (meta.AuthorizedEmail, error) {
	if !needsAuthorization(scope) {
		return meta.AuthorizedEmail{}, invalid("only a repository's or an organization's notifications need authorized addresses")
	}
	addr, err := ParseAuthorizedEmail(addr)
	if err != nil {
		return meta.AuthorizedEmail{}, err
	}
	if s.opts.SMTPAddr == "" || s.opts.SMTPFrom == "" || s.stores.Emails == nil {
		return meta.AuthorizedEmail{}, ErrNoSMTP
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	code := base64.RawURLEncoding.EncodeToString(raw)
	a, send, err := s.stores.Emails.RequestEmailAuthorization(ctx, scope, target, addr, HashCode(code))
	if err != nil || !send {
		return a, err
	}
	scheme := s.opts.Server.Scheme
	if scheme == "" {
		scheme = "https"
	}
	link := scheme + "://" + s.opts.Server.Host + ConfirmPath + "?code=" + url.QueryEscape(code)
	what := targetName(scope, target)
	subject := fmt.Sprintf("Confirm notifications of %s on %s", what, s.opts.Server.Host)
	text := fmt.Sprintf("An administrator of %s on the registry %s asked to send that %s's notifications to this address (%s).\n\n"+
		"To allow it, open this link within 7 days:\n\n%s\n\n"+
		"If you did not expect this, ignore this message: nothing more will be sent to you.\n",
		what, s.opts.Server.Host, strings.Fields(what)[0], addr, link)
	m := events.Email{SMTPAddr: s.opts.SMTPAddr, From: s.opts.SMTPFrom, To: addr, Username: s.opts.SMTPUsername, Password: s.opts.SMTPPassword}
	if err := m.SendText(ctx, subject, text); err != nil {
		s.logRelay(err, "scope", scope, "target", target)
		// Not mailed: the address may be asked for again at once.
		if werr := s.stores.Emails.WithdrawEmailAuthorizationRequest(context.WithoutCancel(ctx), scope, target, addr, HashCode(code)); werr != nil {
			s.log.Warn("withdraw an e-mail authorization request", "err", werr)
		}
		return meta.AuthorizedEmail{}, fmt.Errorf("mail the confirmation: %w", err)
	}
	s.log.Info("e-mail authorization requested", "scope", scope, "target", target)
	return a, nil
}

// checkAuthorized refuses the addresses of an email notification that
// are not confirmed for its target.
func (s *Service) checkAuthorized(ctx context.Context, scope, target string, to []*mail.Address) error {
	if !needsAuthorization(scope) {
		return nil
	}
	if s.stores.Emails == nil {
		return invalid("e-mail addresses cannot be authorized on this server")
	}
	addrs := make([]string, len(to))
	for i, a := range to {
		addrs[i] = a.Address
	}
	bad, err := s.stores.Emails.UnconfirmedEmails(ctx, scope, target, addrs)
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return invalid("config.email: %s not confirmed for %s: %s, then create the notification again",
			strings.Join(bad, ", "), targetName(scope, target), AuthorizeHint(scope, target))
	}
	return nil
}

// confirmedRecipients narrows an email notification's method to the
// recipients confirmed for its target, parsed (em.Recipients), and
// returns the addresses it leaves out. A list that does not parse is left
// to Deliver, which says what is wrong with it.
func (s *Service) confirmedRecipients(ctx context.Context, n meta.Notification, em events.Email) (events.Email, []string, error) {
	to, err := mail.ParseAddressList(em.To)
	if err != nil {
		return em, nil, nil
	}
	if !needsAuthorization(n.Scope) {
		em.Recipients = to
		return em, nil, nil
	}
	if s.stores.Emails == nil {
		return em, nil, errors.New("e-mail addresses cannot be authorized on this server")
	}
	addrs := make([]string, len(to))
	for i, a := range to {
		addrs[i] = a.Address
	}
	bad, err := s.stores.Emails.UnconfirmedEmails(ctx, n.Scope, n.Target, addrs)
	if err != nil {
		return em, nil, err
	}
	skip := map[string]bool{}
	for _, b := range bad {
		skip[b] = true
	}
	keep := make([]*mail.Address, 0, len(to))
	names := make([]string, 0, len(to))
	for _, a := range to {
		if !skip[a.Address] {
			keep = append(keep, a)
			names = append(names, a.String())
		}
	}
	em.To, em.Recipients = strings.Join(names, ", "), keep
	return em, bad, nil
}
