// Package notify turns outbox events into notification deliveries: it
// validates and stores notifications, subscribes to the change feed
// (internal/feed) to queue a delivery for every notification that hears
// an event (Subscriber), and delivers each through its method on the
// durable job queue, in order per notification and repository, at least
// once.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
)

// Events that notifications may subscribe to.
var Events = map[string]bool{
	meta.EventRepoPush: true, meta.EventTagDeleted: true, meta.EventManifestDeleted: true,
	meta.EventRepoCreated: true, meta.EventRepoDeleted: true,
	"repo_mirror_sync_started": true, "repo_mirror_sync_success": true, "repo_mirror_sync_failed": true,
	"vulnerability_found": true, "repo_image_expiry": true, "manifest_scanned": true,
	meta.EventBaseImageUpdated: true,
	meta.EventPromotionPending: true, meta.EventPromotionSucceeded: true, meta.EventPromotionBlocked: true,
	meta.EventQuotaWarning: true, meta.EventQuotaError: true,
}

// CanHear reports whether a notification of scope can ever hear events of
// kind event (one of Events): a repository's own notification is created
// after its repository and deleted with it (meta.DeleteRepository), so it
// never hears repo_created or repo_deleted; an organization's does.
func CanHear(scope, event string) bool {
	return scope != meta.ScopeRepository || (event != meta.EventRepoCreated && event != meta.EventRepoDeleted)
}

// Options configure the service.
type Options struct {
	Server events.Server
	// Guard refuses webhook targets on internal networks unless allowed.
	Guard *events.Guard
	// SMTP, for the email method; empty disables it.
	SMTPAddr, SMTPFrom, SMTPUsername, SMTPPassword string
	Logger                                         *slog.Logger
	// DisableFor is how long a notification whose receiver keeps failing
	// is first disabled for (1 minute); each failed trial after a disable
	// doubles it, up to MaxDisableFor (24 hours). See Deliver.
	DisableFor, MaxDisableFor time.Duration
	// Metrics, if set, counts deliveries by method and outcome.
	Metrics Metrics
}

// Metrics counts delivery attempts: outcome "success", "failure" (the
// receiver refused or could not be reached; retried or counted against
// the notification) or "held" (the notification is disabled or paused).
type Metrics interface {
	Delivery(method, outcome string)
}

// Defaults of Options.DisableFor and Options.MaxDisableFor (GitLab's).
const (
	DefaultDisableFor    = time.Minute
	DefaultMaxDisableFor = 24 * time.Hour
)

// Service manages and delivers notifications.
type Service struct {
	stores Stores
	sealer *auth.Sealer
	opts   Options
	client *http.Client
	log    *slog.Logger
	now    func() time.Time // time.Now; a test's clock
}

// New returns the service.
func New(stores Stores, sealer *auth.Sealer, opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DisableFor <= 0 {
		opts.DisableFor = DefaultDisableFor
	}
	if opts.MaxDisableFor <= 0 {
		opts.MaxDisableFor = DefaultMaxDisableFor
	}
	opts.MaxDisableFor = max(opts.MaxDisableFor, opts.DisableFor)
	return &Service{stores: stores, sealer: sealer, opts: opts, client: events.NewHTTPClient(opts.Guard), log: opts.Logger, now: time.Now}
}

// Input is a notification as Quay's API receives it.
type Input struct {
	Event       string         `json:"event"`
	Method      string         `json:"method"`
	Config      map[string]any `json:"config"`
	EventConfig map[string]any `json:"eventConfig"`
	Title       string         `json:"title"`
	// EventConfigAsShown is event_config, the name a GET shows
	// eventConfig under, which Quay's UI sends back beside eventConfig:
	// it is used when eventConfig is absent (or null); when both are
	// sent, eventConfig wins.
	EventConfigAsShown map[string]any `json:"event_config"`
	ReadOnly
}

// ReadOnly are the fields of a notification as a GET shows it (View) that
// no request sets: a body copied from a GET carries them, and they are
// accepted and ignored (a new notification gets its own uuid and starts
// with no failures).
type ReadOnly struct {
	UUID             json.RawMessage `json:"uuid"`
	NumberOfFailures json.RawMessage `json:"number_of_failures"`
	Disabled         json.RawMessage `json:"disabled"`
	DisabledUntil    json.RawMessage `json:"disabled_until"`
	DisabledReason   json.RawMessage `json:"disabled_reason"`
}

// InvalidError is a notification the API must refuse with 400.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &InvalidError{Msg: fmt.Sprintf(format, args...)}
}

// Create validates and stores a notification. Its secrets (a webhook's
// signing secret, the values of its extra headers) are sealed before they
// are stored. A repository's notification is stored only while the
// repository exists (an error wrapping meta.ErrRepositoryNotFound).
func (s *Service) Create(ctx context.Context, scope, target, actor string, in Input) (meta.Notification, error) {
	if !Events[in.Event] {
		return meta.Notification{}, invalid("unknown event %q", in.Event)
	}
	if !CanHear(scope, in.Event) {
		ns, _, _ := strings.Cut(target, "/")
		return meta.Notification{}, invalid("event %s never fires for a repository's notification (it exists only while the repository does): "+
			"create it at organization scope (POST /api/v1/organization/%s/notification/ if %s is an organization; a user's namespace has none), "+
			"which hears every repository of the organization, or registry-wide", in.Event, ns, ns)
	}
	if len(in.Title) > 255 {
		return meta.Notification{}, invalid("title over 255 characters")
	}
	if in.EventConfig == nil {
		in.EventConfig = in.EventConfigAsShown
	}
	cfg := map[string]any{}
	for k, v := range in.Config {
		cfg[k] = v
	}
	for _, k := range []string{keySecretSealed, keyHeadersSealed, keyHeaderNames} {
		if _, ok := cfg[k]; ok {
			return meta.Notification{}, invalid("config.%s is set by Berth", k)
		}
	}
	format := "quay"
	switch in.Method {
	case "webhook", "slack":
		u, _ := cfg["url"].(string)
		if u == "" {
			return meta.Notification{}, invalid("config.url is required")
		}
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return meta.Notification{}, invalid("config.url %q is not an http(s) URL", u)
		}
		if events.IsRedactedURL(u) {
			// A notification's config as the API shows it, sent back.
			return meta.Notification{}, invalid("config.url %q is redacted as the API shows it (its path and query hold tokens): give the whole URL", u)
		}
		if s.opts.Guard != nil {
			// Refuse what resolves to a forbidden address now; a name that
			// does not resolve yet is checked again at every delivery.
			var dnsErr *net.DNSError
			if err := s.opts.Guard.CheckURL(ctx, u); err != nil && !errors.As(err, &dnsErr) {
				s.logRefused(err, "scope", scope, "target", target, "actor", actor)
				return meta.Notification{}, invalid("config.url: %v", err)
			}
		}
	case events.MethodGitHubDispatch, events.MethodGitLabTrigger:
		if err := s.checkTrigger(ctx, in.Method, cfg); err != nil {
			return meta.Notification{}, err
		}
	case "email":
		e, _ := cfg["email"].(string)
		to, err := mail.ParseAddressList(e)
		if e == "" || err != nil {
			return meta.Notification{}, invalid("config.email must be an e-mail address (or a comma-separated list)")
		}
		if len(to) > MaxEmailRecipients {
			// Each test delivery and each event mails every one of them.
			return meta.Notification{}, invalid("config.email: %d recipients; at most %d", len(to), MaxEmailRecipients)
		}
		if s.opts.SMTPAddr == "" {
			return meta.Notification{}, invalid("the email method needs SMTP settings in the configuration")
		}
		// Quay's rule: a repository's (or organization's) notification
		// mails only addresses their owners confirmed for it.
		if err := s.checkAuthorized(ctx, scope, target, to); err != nil {
			return meta.Notification{}, err
		}
	default:
		return meta.Notification{}, invalid("unknown method %q (webhook, slack, email, github_dispatch, gitlab_trigger)", in.Method)
	}
	if t, ok := cfg["template"]; ok && t != nil && t != "" && in.Method != "webhook" {
		// A template is a webhook's body; the other methods send Berth's
		// own message (an email rendered from a stored template would let
		// anyone who may create a notification write Berth's mail).
		return meta.Notification{}, invalid("config.template is for the webhook method only: %s notifications send Berth's own message", in.Method)
	}
	if in.Method == "webhook" {
		if t, ok := cfg["template"]; ok && t != "" {
			raw, err := templateJSON(t)
			if err == nil {
				err = events.ValidateTemplate(raw)
			}
			if err != nil {
				return meta.Notification{}, invalid("config.template: %v", err)
			}
		}
		if f, ok := cfg["format"].(string); ok && f != "" {
			if f != "quay" && f != "cloudevents" {
				return meta.Notification{}, invalid("config.format %q (quay, cloudevents)", f)
			}
			format = f
		}
		if t, ok := cfg["template"]; ok && t != nil && t != "" && format == "cloudevents" {
			// The template makes the body, which is then no CloudEvent: a
			// CloudEvents receiver would refuse every delivery.
			return meta.Notification{}, invalid("config.template and config.format cloudevents exclude each other: a template's body is not a CloudEvent")
		}
	}
	// Secrets are sealed whatever the method (only webhooks use them).
	hs, err := headersOf(cfg)
	if err != nil {
		return meta.Notification{}, invalid("%v", err)
	}
	if err := events.ValidateHeaders(hs); err != nil {
		return meta.Notification{}, invalid("config.headers: %v", err)
	}
	if sec, ok := cfg[keySecret]; ok {
		if str, ok := sec.(string); !ok || str == "" {
			return meta.Notification{}, invalid("config.secret must be a non-empty string")
		}
	}
	if key := redactedSecret(cfg, hs); key != "" {
		// A notification's config as the API shows it, sent back: the
		// mask would become the secret.
		return meta.Notification{}, invalid("%s is %q, the mask the API shows in place of a secret: give the secret itself", key, redacted)
	}
	s.sealSecrets(cfg, hs)
	if in.Event == "repo_image_expiry" {
		// Quay's days: how long before a tag expires to announce it.
		if d, ok := in.EventConfig["days"]; ok && !validDays(d) {
			return meta.Notification{}, invalid("eventConfig.days must be a whole number of days from 1 to 3650")
		}
	}
	if in.Event == "vulnerability_found" {
		if lv, ok := in.EventConfig["level"]; ok {
			if _, ok := VulnLevel(lv); !ok {
				return meta.Notification{}, invalid("eventConfig.level must be 0 (Critical) to 5 (Unknown), or a severity name")
			}
		}
	}
	cb, _ := json.Marshal(cfg)
	ecfg := in.EventConfig
	if ecfg == nil {
		ecfg = map[string]any{}
	}
	eb, _ := json.Marshal(ecfg)
	n, err := s.stores.Notifications.CreateNotificationForTarget(ctx, meta.Notification{UUID: uuid.NewString(), Scope: scope, Target: target, Event: in.Event,
		Method: in.Method, Title: in.Title, Config: cb, EventConfig: eb, Format: format, CreatedBy: actor})
	if errors.Is(err, meta.ErrTooManyNotifications) {
		return meta.Notification{}, invalid("%v: delete some first", err)
	}
	return n, err
}

// logRefused logs, for the operator, what the SSRF guard refused: the
// address a host name resolves to, which the answer to whoever asked for
// the target leaves out (events.RefusedError).
func (s *Service) logRefused(err error, attrs ...any) {
	var re *events.RefusedError
	if errors.As(err, &re) {
		s.log.Info("notification target refused by the SSRF guard", append(attrs, "detail", re.Detail())...)
	}
}

// logRelay logs, for the operator, which SMTP relay an email failed at:
// the failure as the notification's admins see it leaves the relay's
// address out (events.RelayError).
func (s *Service) logRelay(err error, attrs ...any) {
	var re *events.RelayError
	if errors.As(err, &re) {
		s.log.Warn("email through the SMTP relay failed", append(attrs, "detail", re.Detail())...)
	}
}

// templateJSON accepts a template as Quay stores it (a string holding
// JSON) or as a JSON object.
func templateJSON(t any) (json.RawMessage, error) {
	if s, ok := t.(string); ok {
		if !json.Valid([]byte(s)) {
			return nil, errors.New("not valid JSON")
		}
		return json.RawMessage(s), nil
	}
	return json.Marshal(t)
}

// Test queues the event's sample payload for a notification. While an
// earlier test of the notification is queued or running it queues
// nothing and returns an error wrapping meta.ErrTestDeliveryPending.
func (s *Service) Test(ctx context.Context, n meta.Notification, repo string) error {
	payload, _ := json.Marshal(meta.DeliveryJob{NotificationID: n.ID, Sample: true, Repository: repo})
	// One attempt, one at a time: a test says whether the receiver
	// answers now (its outcome is recorded), and retrying it for days, or
	// queuing thousands, would only keep the delivery workers on
	// receivers that do not answer.
	// It shares the workers as the namespace's deliveries do (Subscriber).
	ns, _, _ := strings.Cut(repo, "/")
	_, err := s.stores.Notifications.EnqueueTestDelivery(ctx, meta.Job{Queue: meta.NotifyQueue, OrderingKey: n.UUID + "|test", FairKey: ns,
		Payload: payload, MaxAttempts: 1})
	if err != nil {
		return fmt.Errorf("test notification %s: %w", n.UUID, err)
	}
	return nil
}

// validDays reports whether a repo_image_expiry eventConfig.days is a
// whole number from 1 to 3650 (a number, or a string of one, as Quay's
// UI sends it).
func validDays(v any) bool {
	var n float64
	switch d := v.(type) {
	case float64:
		n = d
	case string:
		i, err := strconv.Atoi(d)
		if err != nil {
			return false
		}
		n = float64(i)
	default:
		return false
	}
	return n == float64(int(n)) && n >= 1 && n <= 3650
}

// MaxEmailRecipients bounds the addresses of one e-mail notification.
const MaxEmailRecipients = 10
