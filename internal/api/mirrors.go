package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/redact"
)

// Mirrors is the repository mirroring service, as the API needs it.
type Mirrors interface {
	// Seal seals an upstream password for storage.
	Seal(password string) string
	// Wake makes the scheduler look for due syncs now.
	Wake()
}

// mirrorEndpoints are Quay's repository mirror endpoints.
func (a *API) mirrorEndpoints() []repoEndpoint {
	h := func(op string) repoHandler {
		return func(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, _ []string) error {
			if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin); err != nil {
				return err
			}
			if a.opts.Mirrors == nil {
				return apiError(http.StatusNotImplemented, "not_implemented", "repository mirroring is not enabled on this server")
			}
			err := a.mirror(w, r, id, op, repo)
			switch {
			case errors.Is(err, meta.ErrRepositoryNotFound):
				// Deleted since the caller's rights were checked.
				return notFound("repository %s not found", repo)
			case errors.Is(err, meta.ErrMirrorNotFound):
				// Its repository (and the mirror with it) was deleted
				// since the handler read the mirror.
				return notFound("repository %s has no mirror", repo)
			}
			return err
		}
	}
	return []repoEndpoint{
		{http.MethodGet, "mirror", h("get")},
		{http.MethodPost, "mirror", h("create")},
		{http.MethodPut, "mirror", h("update")},
		{http.MethodPost, "mirror/sync-now", h("sync-now")},
		{http.MethodPost, "mirror/sync-cancel", h("sync-cancel")},
	}
}

type mirrorConfig struct {
	VerifyTLS      *bool             `json:"verify_tls,omitempty"`
	UnsignedImages *bool             `json:"unsigned_images,omitempty"`
	Proxy          *meta.MirrorProxy `json:"proxy,omitempty"`
}

// mirrorInput is the body of POST and PUT: absent fields keep their value
// (PUT) or take the default (POST).
type mirrorInput struct {
	IsEnabled          *bool            `json:"is_enabled"`
	MirrorType         *string          `json:"mirror_type"`
	ExternalReference  *string          `json:"external_reference"`
	Username           *string          `json:"external_registry_username"`
	Password           *string          `json:"external_registry_password"`
	Config             *mirrorConfig    `json:"external_registry_config"`
	SyncInterval       *int64           `json:"sync_interval"`
	SyncStartDate      *string          `json:"sync_start_date"`
	RootRule           *meta.MirrorRule `json:"root_rule"`
	RobotUsername      *string          `json:"robot_username"`
	ArchitectureFilter *[]string        `json:"architecture_filter"`
	// Quay's skopeo timeout, which its UI sends: accepted and ignored
	// (Berth copies without skopeo; one sync is bounded by Berth's own
	// limit, mirror.DefaultSyncTimeout).
	SkopeoTimeoutInterval json.RawMessage `json:"skopeo_timeout_interval"`
	// Read-only fields a client may send back from a GET (mirrorView),
	// ignored.
	SyncExpirationDate   *string         `json:"sync_expiration_date"`
	SyncStatus           *string         `json:"sync_status"`
	SyncRetriesRemaining *int            `json:"sync_retries_remaining"`
	NextSyncDate         json.RawMessage `json:"next_sync_date"`
	LastError            json.RawMessage `json:"last_error"`
}

const mirrorTimeFormat = "2006-01-02T15:04:05Z"

func mirrorView(m meta.Mirror) map[string]any {
	arch := m.ArchFilter
	if arch == nil {
		arch = []string{}
	}
	rule := m.RootRule
	if rule.Value == nil {
		rule.Value = []string{}
	}
	proxy := m.Proxy
	proxy.HTTPProxy, proxy.HTTPSProxy = redactProxy(proxy.HTTPProxy), redactProxy(proxy.HTTPSProxy)
	return map[string]any{
		"is_enabled":                 m.Enabled,
		"mirror_type":                "PULL",
		"external_reference":         m.ExternalReference,
		"external_registry_username": nullable(m.Username),
		"external_registry_config": map[string]any{"verify_tls": m.VerifyTLS, "unsigned_images": m.UnsignedImages,
			"proxy": proxy},
		"sync_interval":          int64(m.SyncInterval / time.Second),
		"sync_start_date":        m.SyncStartDate.UTC().Format(mirrorTimeFormat),
		"sync_expiration_date":   nil,
		"sync_retries_remaining": m.RetriesRemaining,
		"sync_status":            m.Status,
		"root_rule":              rule,
		"robot_username":         m.RobotUsername,
		"architecture_filter":    arch,
		// Beyond Quay: when the next sync is due and why the last failed.
		"next_sync_date": m.NextSyncAt.UTC().Format(mirrorTimeFormat),
		"last_error":     m.LastError,
	}
}

// proxySchemes are the proxy URL schemes a sync dials (net/http's).
var proxySchemes = []string{"http", "https", "socks5", "socks5h"}

// checkProxyURL refuses a proxy URL that does not parse, is not
// scheme://host[:port] with a scheme a sync dials, or carries
// credentials: they would be stored unsealed and shown to every
// repository admin. Without a scheme, http_proxy's "user:pass@proxy:3128"
// parses as scheme "user" with the rest opaque and no userinfo, which
// neither a sync could dial nor the redaction would hide.
func checkProxyURL(field, raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return badRequest("external_registry_config.proxy.%s: invalid URL: %v", field, err)
	}
	if u.User != nil || u.Opaque != "" && strings.Contains(u.Opaque, "@") {
		return badRequest("external_registry_config.proxy.%s: a proxy URL takes no credentials (user:password@): give a proxy that needs none, such as scheme://host:port", field)
	}
	if !slices.Contains(proxySchemes, strings.ToLower(u.Scheme)) || u.Opaque != "" || u.Host == "" {
		return badRequest("external_registry_config.proxy.%s: a proxy URL is scheme://host[:port] with scheme http, https or socks5, such as http://proxy.example:3128", field)
	}
	return nil
}

// redactProxy is a stored proxy URL as the API shows it: without
// credentials, also in one stored before they were refused without a
// scheme ("user:pass@proxy:3128", which redact.Userinfo leaves whole).
func redactProxy(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Opaque == "" {
		return redact.Userinfo(raw)
	}
	if at := strings.LastIndex(raw, "@"); at >= 0 {
		return raw[at+1:]
	}
	return raw
}

// upstreamMoved names what an update changes of where a mirror's stored
// credentials would be sent: the upstream registry's host, the proxy, or
// TLS verification turned off ("" for none of these).
func upstreamMoved(before, after meta.Mirror) string {
	switch {
	case mirror.UpstreamRegistry(before.ExternalReference) != mirror.UpstreamRegistry(after.ExternalReference):
		return "the upstream registry (" + mirror.UpstreamRegistry(before.ExternalReference) + " to " + mirror.UpstreamRegistry(after.ExternalReference) + ")"
	case before.Proxy != after.Proxy:
		return "the proxy"
	case before.VerifyTLS && !after.VerifyTLS:
		return "verify_tls (to false)"
	}
	return ""
}

// syncedChanged is whether an update changes what a sync of the mirror
// copies or from where: the upstream repository, the robot it copies as,
// the tag filter or the architecture filter, the proxy, or TLS
// verification turned off (which also allows plain HTTP). Each order of
// the same globs or architectures is the same filter. Credentials are
// left out: they reach the same upstream repository (an update that
// moves the upstream gives them again, upstreamMoved), as are the
// schedule, is_enabled and unsigned_images.
func syncedChanged(before, after meta.Mirror) bool {
	return before.ExternalReference != after.ExternalReference ||
		before.RobotUsername != after.RobotUsername ||
		before.RootRule.Kind != after.RootRule.Kind || !sameSet(before.RootRule.Value, after.RootRule.Value) ||
		!sameSet(before.ArchFilter, after.ArchFilter) ||
		before.Proxy != after.Proxy ||
		before.VerifyTLS && !after.VerifyTLS
}

// sameSet is whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// applyMirrorInput validates in and applies it to m.
func (a *API) applyMirrorInput(ctx context.Context, repo string, in mirrorInput, m *meta.Mirror, creating bool) error {
	if in.MirrorType != nil && *in.MirrorType != "PULL" {
		return badRequest("unsupported mirror_type %q (PULL)", *in.MirrorType)
	}
	if in.IsEnabled != nil {
		m.Enabled = *in.IsEnabled
	}
	if in.ExternalReference != nil {
		m.ExternalReference = strings.TrimSpace(*in.ExternalReference)
	}
	if !strings.Contains(m.ExternalReference, "/") || strings.ContainsAny(m.ExternalReference, "@ ") {
		return badRequest("external_reference is required: host[:port]/path/repository")
	}
	if in.Username != nil {
		m.Username = *in.Username
	}
	if in.Password != nil {
		m.PasswordSealed = a.opts.Mirrors.Seal(*in.Password)
	}
	if c := in.Config; c != nil {
		if c.VerifyTLS != nil {
			m.VerifyTLS = *c.VerifyTLS
		}
		if c.UnsignedImages != nil {
			m.UnsignedImages = *c.UnsignedImages
		}
		if c.Proxy != nil {
			// Checked when a request changes it (a client may send a
			// stored value back), as the bounds below.
			if creating || c.Proxy.HTTPProxy != m.Proxy.HTTPProxy {
				if err := checkProxyURL("http_proxy", c.Proxy.HTTPProxy); err != nil {
					return err
				}
			}
			if creating || c.Proxy.HTTPSProxy != m.Proxy.HTTPSProxy {
				if err := checkProxyURL("https_proxy", c.Proxy.HTTPSProxy); err != nil {
					return err
				}
			}
			m.Proxy = *c.Proxy
		}
	}
	// The bounds hold for values a request changes: a client that sends a
	// mirror's stored settings back (Quay-style full PUT) is not refused
	// for one stored before the bounds existed.
	if in.SyncInterval != nil && (creating || time.Duration(*in.SyncInterval)*time.Second != m.SyncInterval) {
		if *in.SyncInterval < minSyncIntervalSeconds || *in.SyncInterval > maxIntervalSeconds {
			return badRequest("sync_interval must be %d seconds (a minute) to %d (10 years), not %d", minSyncIntervalSeconds, maxIntervalSeconds, *in.SyncInterval)
		}
		m.SyncInterval = time.Duration(*in.SyncInterval) * time.Second
	}
	if m.SyncInterval <= 0 {
		return badRequest("sync_interval is required (seconds)")
	}
	if in.SyncStartDate != nil {
		t, err := time.Parse(mirrorTimeFormat, *in.SyncStartDate)
		if err != nil {
			if t, err = time.Parse(time.RFC3339, *in.SyncStartDate); err != nil {
				return badRequest("invalid sync_start_date %q (YYYY-MM-DDTHH:MM:SSZ)", *in.SyncStartDate)
			}
		}
		m.SyncStartDate = t
	} else if creating {
		m.SyncStartDate = time.Now().UTC().Truncate(time.Second)
	}
	rootChanged := creating || in.RootRule != nil && !slices.Equal(in.RootRule.Value, m.RootRule.Value)
	if in.RootRule != nil {
		m.RootRule = *in.RootRule
	}
	if m.RootRule.Kind != "tag_glob_csv" {
		return badRequest("root_rule.rule_kind must be tag_glob_csv")
	}
	if len(m.RootRule.Value) == 0 {
		return badRequest("root_rule.rule_value needs at least one glob")
	}
	if !rootChanged {
		// Stored before the bounds below existed, and not changed here.
	} else if len(m.RootRule.Value) > maxMirrorGlobs {
		return badRequest("root_rule.rule_value has %d globs; at most %d are allowed", len(m.RootRule.Value), maxMirrorGlobs)
	}
	for _, g := range m.RootRule.Value {
		if rootChanged && len(g) > maxMirrorGlobLen {
			return badRequest("tag glob %.32q... is %d bytes; at most %d are allowed", g, len(g), maxMirrorGlobLen)
		}
		if !mirror.ValidGlob(g) {
			return badRequest("invalid tag glob %q", g)
		}
	}
	if in.ArchitectureFilter != nil && !slices.Equal(*in.ArchitectureFilter, m.ArchFilter) {
		// Bounded as the globs are (each sync's event carries the filter).
		if n := len(*in.ArchitectureFilter); n > maxMirrorArchs {
			return badRequest("architecture_filter has %d entries; at most %d are allowed", n, maxMirrorArchs)
		}
		for _, a := range *in.ArchitectureFilter {
			if len(a) == 0 || len(a) > maxMirrorArchLen {
				return badRequest("architecture_filter entry %.32q is %d bytes; 1 to %d are allowed", a, len(a), maxMirrorArchLen)
			}
		}
		m.ArchFilter = *in.ArchitectureFilter
	}
	if in.RobotUsername != nil && *in.RobotUsername != m.RobotUsername || creating {
		robot := ""
		if in.RobotUsername != nil {
			robot = *in.RobotUsername
		}
		if err := a.checkMirrorRobot(ctx, repo, robot); err != nil {
			return err
		}
		m.RobotUsername = robot
	}
	return nil
}

// checkMirrorRobot requires a robot of the repository's namespace. With
// authentication off (every caller a nameless superuser) no robot is
// needed: the mirror then writes as "mirror".
func (a *API) checkMirrorRobot(ctx context.Context, repo, robot string) error {
	if robot == "" {
		if _, open := a.auth.(Open); open {
			return nil
		}
		return badRequest("robot_username is required")
	}
	ns, _ := splitRepo(repo)
	u, err := a.db.Users.UserByName(ctx, robot)
	if errors.Is(err, meta.ErrUserNotFound) || err == nil && (u.Kind != meta.UserKindRobot || !strings.HasPrefix(robot, ns+"+")) {
		return badRequest("robot_username %q is not a robot of namespace %s", robot, ns)
	}
	return err
}

// configuredBy is the account a mirror configured by id records
// (meta.Mirror.ConfiguredBy): a sync links a blob from another repository
// of the namespace only where both its robot and this account may pull,
// so that a repository admin who may choose any robot of the namespace
// does not borrow its reach (a manifest naming a private layer of a
// repository the robot may read would link it here). 0, for an access
// token or the nameless caller of auth mode "none", decides as the
// anonymous caller instead: links only from what anyone may pull. An
// update records it only when it changes what the mirror syncs
// (syncedChanged).
func configuredBy(id auth.Identity) int64 {
	if id.Kind == auth.KindUser || id.Kind == auth.KindRobot {
		return id.ID
	}
	return 0
}

func (a *API) mirror(w http.ResponseWriter, r *http.Request, id auth.Identity, op, repo string) error {
	ctx := r.Context()
	switch op {
	case "create":
		var in mirrorInput
		if err := decode(w, r, &in); err != nil {
			return err
		}
		if _, err := a.db.Mirrors.GetMirror(ctx, repo); err == nil {
			return apiError(http.StatusConflict, "conflict", "repository %s already has a mirror", repo)
		}
		if err := a.refuseInProxyCache(ctx, repo, "mirrors"); err != nil {
			return err
		}
		m := meta.Mirror{Repository: repo, Enabled: true, VerifyTLS: true, ConfiguredBy: configuredBy(id)}
		if err := a.applyMirrorInput(ctx, repo, in, &m, true); err != nil {
			return err
		}
		err := a.db.Mirrors.CreateMirror(ctx, m)
		if errors.Is(err, meta.ErrExists) {
			return apiError(http.StatusConflict, "conflict", "repository %s already has a mirror", repo)
		}
		if errors.Is(err, meta.ErrProxyCacheConflict) {
			return forbidden("%v", err)
		}
		if err != nil {
			return err
		}
		a.audit(r, id, "repo_mirror_enabled", repo, "", map[string]string{"external_reference": m.ExternalReference, "robot": m.RobotUsername})
		a.opts.Mirrors.Wake()
		m, err = a.db.Mirrors.GetMirror(ctx, repo)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusCreated, mirrorView(m))
		return nil
	}
	m, err := a.db.Mirrors.GetMirror(ctx, repo)
	if errors.Is(err, meta.ErrMirrorNotFound) {
		return notFound("repository %s has no mirror", repo)
	}
	if err != nil {
		return err
	}
	switch op {
	case "get":
		writeJSON(w, http.StatusOK, mirrorView(m))
	case "update":
		var in mirrorInput
		if err := decode(w, r, &in); err != nil {
			return err
		}
		before := m
		if err := a.applyMirrorInput(ctx, repo, in, &m, false); err != nil {
			return err
		}
		// Whoever changes what the mirror syncs, or from where, answers
		// for its links from now on (configuredBy); a routine change (the
		// interval, the start date, is_enabled, the credentials) leaves
		// them to whoever did, or a more privileged account touching a
		// repository admin's mirror would lend it its reach.
		if syncedChanged(before, m) {
			m.ConfiguredBy = configuredBy(id)
		}
		// A mirror made before proxy cache organizations refused them
		// may still be turned off there (and changed while off).
		if m.Enabled {
			if err := a.refuseMirrorInProxyCache(ctx, repo, "an update that leaves this mirror enabled"); err != nil {
				return err
			}
		}
		// The stored password goes to the upstream it was given for: an
		// update that points the mirror elsewhere (or lets a
		// man-in-the-middle in) gives it again, or clears it with "".
		if moved := upstreamMoved(before, m); moved != "" && before.PasswordSealed != "" && in.Password == nil {
			return badRequest("give the upstream credentials again when the upstream changes: this update changes %s, "+
				"so send external_registry_username and external_registry_password with it (an empty password clears the stored one)", moved)
		}
		reschedule := !m.SyncStartDate.Equal(before.SyncStartDate)
		if err := a.db.Mirrors.UpdateMirror(ctx, m, reschedule); err != nil {
			return err
		}
		a.audit(r, id, "repo_mirror_config_changed", repo, "", map[string]string{"external_reference": m.ExternalReference, "robot": m.RobotUsername})
		a.opts.Mirrors.Wake()
		if m, err = a.db.Mirrors.GetMirror(ctx, repo); err != nil {
			return err
		}
		writeJSON(w, http.StatusCreated, mirrorView(m))
	case "sync-now":
		if err := a.refuseMirrorInProxyCache(ctx, repo, "sync-now"); err != nil {
			return err
		}
		var inactive *meta.MirrorInactiveError
		if err := a.db.Mirrors.MirrorSyncNow(ctx, repo); errors.As(err, &inactive) {
			return badRequest("%v", inactive)
		} else if err != nil {
			return err
		}
		a.audit(r, id, "repo_mirror_sync_now_requested", repo, "", map[string]string{})
		a.opts.Mirrors.Wake()
		w.WriteHeader(http.StatusNoContent)
	case "sync-cancel":
		if err := a.db.Mirrors.MirrorSyncCancel(ctx, repo); err != nil {
			return err
		}
		a.audit(r, id, "repo_mirror_sync_cancel_requested", repo, "", map[string]string{})
		w.WriteHeader(http.StatusNoContent)
	}
	return nil
}

// refuseMirrorInProxyCache refuses, with 403, what would have repo's
// mirror sync (doing) when its organization is a proxy cache: the mirror
// was made before such organizations refused mirrors, and would overwrite
// the cached tags with another upstream's images. It may only be turned
// off.
func (a *API) refuseMirrorInProxyCache(ctx context.Context, repo, doing string) error {
	ns, _, _ := strings.Cut(repo, "/")
	_, err := a.db.ProxyCaches.ProxyCacheOf(ctx, ns)
	if errors.Is(err, meta.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return forbidden("%s is a proxy cache organization: its content comes from its upstream, so its mirrors do not sync and %s is refused; "+
		"turn this mirror off with is_enabled false", ns, doing)
}

// Bounds of a mirror's configuration: each sync records its globs in its
// repo_mirror_sync_started event and audit entry, so neither they nor the
// syncs are unbounded. A tag is at most 128 characters; a glob at most
// maxMirrorGlobLen bytes.
const (
	minSyncIntervalSeconds = 60
	maxMirrorGlobs         = 100
	maxMirrorGlobLen       = 255
	maxMirrorArchs         = 32  // entries of architecture_filter
	maxMirrorArchLen       = 128 // bytes of each, as a platform field at push
)

// maxIntervalSeconds bounds the durations the API takes in seconds (a
// mirror's sync interval, a proxy cache's expiration): 10 years, far from
// where a time.Duration overflows (about 292 years, which wrapped a huge
// interval to a fraction of a second).
const maxIntervalSeconds = 10 * 365 * 24 * 3600
