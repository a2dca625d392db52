package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
)

// Keys of a stored method config that hold secrets, sealed with the
// service's auth.Sealer. The API shows neither values nor sealed forms.
const (
	keySecret        = "secret"         // the signing secret, as given
	keySecretSealed  = "secret_sealed"  // ... as stored
	keyHeaders       = "headers"        // extra request headers, as given (and as stored before Berth sealed them)
	keyHeadersSealed = "headers_sealed" // ... their JSON object, as stored
	keyHeaderNames   = "header_names"   // ... their names, stored in clear for the API
)

// redacted replaces every secret value the API shows.
const redacted = "********"

// sealSecrets moves the secrets of a method config into their sealed
// forms: the signing secret, and the extra headers as one sealed JSON
// object (their names kept in clear, sorted). hs are the headers already
// read and validated from cfg[keyHeaders].
func (s *Service) sealSecrets(cfg map[string]any, hs map[string]string) {
	if sec, ok := cfg[keySecret].(string); ok {
		delete(cfg, keySecret)
		cfg[keySecretSealed] = s.sealer.Seal([]byte(sec))
	}
	if tok, ok := cfg[keyToken].(string); ok {
		delete(cfg, keyToken)
		cfg[keyTokenSealed] = s.sealer.Seal([]byte(tok))
	}
	if _, ok := cfg[keyHeaders]; ok {
		delete(cfg, keyHeaders)
		b, _ := json.Marshal(hs) // a map of strings always marshals
		cfg[keyHeadersSealed] = s.sealer.Seal(b)
		cfg[keyHeaderNames] = slices.Sorted(maps.Keys(hs))
	}
}

// redactedSecret names the first secret of a config as Create received
// it whose value is the mask View shows (config.secret, config.token, or
// a header), or returns "".
func redactedSecret(cfg map[string]any, hs map[string]string) string {
	for _, k := range []string{keySecret, keyToken} {
		if v, _ := cfg[k].(string); v == redacted {
			return "config." + k
		}
	}
	for _, name := range slices.Sorted(maps.Keys(hs)) {
		if hs[name] == redacted {
			return fmt.Sprintf("config.headers[%q]", name)
		}
	}
	return ""
}

// headersOf reads the headers of a config as Create received it, or as
// stored in clear before they were sealed: an object of strings.
func headersOf(cfg map[string]any) (map[string]string, error) {
	h, ok := cfg[keyHeaders]
	if !ok {
		return nil, nil
	}
	m, ok := h.(map[string]any)
	if !ok {
		return nil, errors.New("config.headers must be an object of strings")
	}
	hs := make(map[string]string, len(m))
	for k, v := range m {
		str, ok := v.(string)
		if !ok || k == "" {
			return nil, fmt.Errorf("config.headers[%q] must be a string", k)
		}
		hs[k] = str
	}
	return hs, nil
}

// openHeaders returns the extra headers of a stored config: sealed, or in
// clear, as earlier versions of Berth stored them.
func (s *Service) openHeaders(n meta.Notification) (map[string]string, error) {
	var cfg struct {
		Headers       map[string]string `json:"headers"`
		HeadersSealed string            `json:"headers_sealed"`
	}
	if err := json.Unmarshal(n.Config, &cfg); err != nil {
		return nil, fmt.Errorf("notification %s config: %w", n.UUID, err)
	}
	if cfg.HeadersSealed == "" {
		return cfg.Headers, nil
	}
	b, err := s.sealer.Open(cfg.HeadersSealed)
	if err != nil {
		return nil, fmt.Errorf("notification %s headers: %w", n.UUID, err)
	}
	var hs map[string]string
	if err := json.Unmarshal(b, &hs); err != nil {
		return nil, fmt.Errorf("notification %s headers: damaged", n.UUID)
	}
	return hs, nil
}

// View is a notification as the API shows it: Quay's fields, secrets
// redacted (the signing secret, the value of every extra header, whose
// names stay visible, and the path and query of a webhook's or Slack's
// URL, which carry tokens: scheme and host stay), and Berth's disabled
// state. A redacted URL given back to Create is refused: it never
// replaces the one stored.
func View(n meta.Notification) map[string]any {
	var cfg map[string]any
	json.Unmarshal(n.Config, &cfg)
	if cfg == nil {
		cfg = map[string]any{}
	}
	if u, ok := cfg["url"].(string); ok && (n.Method == "webhook" || n.Method == "slack") {
		cfg["url"] = events.RedactURL(u)
	}
	if _, ok := cfg[keySecretSealed]; ok {
		delete(cfg, keySecretSealed)
		cfg[keySecret] = redacted
	}
	if _, ok := cfg[keySecret]; ok {
		cfg[keySecret] = redacted
	}
	if _, ok := cfg[keyTokenSealed]; ok {
		delete(cfg, keyTokenSealed)
		cfg[keyToken] = redacted
	}
	shown := map[string]any{}
	if names, ok := cfg[keyHeaderNames].([]any); ok {
		for _, name := range names {
			if s, ok := name.(string); ok {
				shown[s] = redacted
			}
		}
	}
	if clear, ok := cfg[keyHeaders].(map[string]any); ok { // stored before headers were sealed
		for name := range clear {
			shown[name] = redacted
		}
	}
	_, sealed := cfg[keyHeadersSealed]
	if _, ok := cfg[keyHeaders]; ok || sealed {
		cfg[keyHeaders] = shown
	}
	delete(cfg, keyHeadersSealed)
	delete(cfg, keyHeaderNames)
	var ecfg map[string]any
	json.Unmarshal(n.EventConfig, &ecfg)
	v := map[string]any{"uuid": n.UUID, "title": n.Title, "event": n.Event, "method": n.Method, "config": cfg,
		"event_config": ecfg, "number_of_failures": n.NumberOfFailures,
		"disabled": n.Disabled(), "disabled_until": nil, "disabled_reason": ""}
	if n.Disabled() {
		v["disabled_reason"] = n.DisabledReason
		if !n.DisabledUntil.IsZero() {
			v["disabled_until"] = n.DisabledUntil.UTC().Format(time.RFC3339)
		}
	}
	return v
}

// SealStoredHeaders seals the header values (and any signing secret) that
// earlier versions of Berth stored in clear, and returns how many
// notifications it sealed. It is safe to run from any number of processes
// at once.
func (s *Service) SealStoredHeaders(ctx context.Context) (int, error) {
	ns, err := s.stores.Notifications.AllNotifications(ctx)
	if err != nil {
		return 0, err
	}
	sealed := 0
	for _, n := range ns {
		ok, err := s.sealStored(ctx, n)
		if err != nil {
			return sealed, err
		}
		if ok {
			sealed++
		}
	}
	return sealed, nil
}

// sealStored seals the clear secrets of one stored notification, if it
// has any, and reports whether it did. A config that changed since n
// was read is left to whoever changed it.
func (s *Service) sealStored(ctx context.Context, n meta.Notification) (bool, error) {
	var cfg map[string]any
	if err := json.Unmarshal(n.Config, &cfg); err != nil {
		return false, fmt.Errorf("notification %s config: %w", n.UUID, err)
	}
	_, clearHeaders := cfg[keyHeaders]
	_, clearSecret := cfg[keySecret]
	if !clearHeaders && !clearSecret {
		return false, nil
	}
	hs, err := headersOf(cfg)
	if err != nil {
		return false, fmt.Errorf("notification %s: %w", n.UUID, err)
	}
	s.sealSecrets(cfg, hs)
	b, err := json.Marshal(cfg)
	if err != nil {
		return false, fmt.Errorf("notification %s config: %w", n.UUID, err)
	}
	ok, err := s.stores.Notifications.ReplaceNotificationConfig(ctx, n.ID, n.Config, b)
	if err != nil {
		return false, err
	}
	if ok {
		s.log.Info("sealed the secrets of a notification stored in clear", "notification", n.UUID)
	}
	return ok, nil
}
