package events

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Methods that start a CI pipeline instead of posting the event: Berth's
// base_image_updated (and any event) can trigger a rebuild directly.
const (
	MethodGitHubDispatch = "github_dispatch"
	MethodGitLabTrigger  = "gitlab_trigger"
)

// GitHub's limits on a repository_dispatch request.
const (
	maxClientPayloadKeys = 10
	maxEventTypeLen      = 100
)

// clientPayloadKeys are the payload fields sent to CI, in order of use:
// GitHub accepts at most ten top-level keys.
var clientPayloadKeys = []string{"event", "repository", "docker_url", "digest", "tags", "updated_tags", "base",
	"fixed_vulnerabilities", "new_vulnerabilities", "vulnerability", "event_id", "namespace", "name", "homepage", "media_type"}

// ClientPayload picks at most ten fields of a Quay payload, the ones a
// workflow needs first.
func ClientPayload(p map[string]any) map[string]any {
	out := map[string]any{}
	for _, k := range clientPayloadKeys {
		if len(out) == maxClientPayloadKeys {
			break
		}
		if v, ok := p[k]; ok {
			out[k] = v
		}
	}
	return out
}

// GitHubDispatch starts GitHub Actions workflows through the repository
// dispatch API: POST {APIURL}/repos/{Repository}/dispatches with
// {"event_type", "client_payload"} (a workflow listens with
// `on: repository_dispatch: types: [<event type>]`).
type GitHubDispatch struct {
	// APIURL is GitHub's API root (https://api.github.com when empty;
	// GitHub Enterprise Server's https://<host>/api/v3).
	APIURL string
	// Repository is owner/name.
	Repository string
	// Token may create dispatch events on the repository.
	Token string
	// EventType is the dispatch's event_type (the event's kind when
	// empty).
	EventType string
	Client    *http.Client
}

// Deliver implements Method. d.Body is the event's Quay payload.
func (g GitHubDispatch) Deliver(ctx context.Context, d Delivery) Result {
	var p map[string]any
	if err := json.Unmarshal(d.Body, &p); err != nil {
		return Result{Err: fmt.Errorf("github_dispatch: the payload is not a JSON object: %w", err)}
	}
	et := g.EventType
	if et == "" {
		et = d.Kind
	}
	body, err := json.Marshal(map[string]any{"event_type": et, "client_payload": ClientPayload(p)})
	if err != nil {
		return Result{Err: fmt.Errorf("github_dispatch: %w", err)}
	}
	if err := validDispatchRepository(g.Repository); err != nil {
		// Stored by an earlier version, which let it through: no URL.
		return Result{Err: unsendable{fmt.Errorf("github_dispatch: %w", err)}}
	}
	api := strings.TrimSuffix(g.APIURL, "/")
	if api == "" {
		api = "https://api.github.com"
	}
	d.Body, d.ContentType = body, "application/json"
	return send(ctx, g.Client, api+"/repos/"+g.Repository+"/dispatches", d, nil, map[string]string{
		"Authorization":        "Bearer " + g.Token,
		"Accept":               "application/vnd.github+json",
		"X-GitHub-Api-Version": "2022-11-28",
	}, g.Token)
}

// ValidateGitHubDispatch checks a github_dispatch configuration.
func ValidateGitHubDispatch(repository, eventType, apiURL string) error {
	if err := validDispatchRepository(repository); err != nil {
		return err
	}
	if len(eventType) > maxEventTypeLen {
		return fmt.Errorf("event_type is over %d characters", maxEventTypeLen)
	}
	if apiURL != "" {
		if u, err := url.Parse(apiURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("api_url %q is not an http(s) URL", apiURL)
		}
	}
	return nil
}

// validDispatchRepository checks a github_dispatch repository: owner/name,
// each a URL path segment as it is (no '%', nothing url.PathEscape would
// escape), since it is sent as the path of the dispatch URL.
func validDispatchRepository(repository string) error {
	owner, name, ok := strings.Cut(repository, "/")
	if !ok || !plainSegment(owner) || !plainSegment(name) {
		return fmt.Errorf("repository %q is not owner/name", repository)
	}
	return nil
}

// plainSegment reports whether s is a non-empty URL path segment that
// needs no escaping (and holds no escape).
func plainSegment(s string) bool {
	return s != "" && !strings.Contains(s, "%") && url.PathEscape(s) == s && s != "." && s != ".."
}

// GitLabTrigger starts a GitLab CI pipeline with a pipeline trigger token:
// POST {BaseURL}/api/v4/projects/{Project}/trigger/pipeline with the
// token, the ref and the event's fields as BERTH_* CI variables.
type GitLabTrigger struct {
	// BaseURL is the GitLab instance (https://gitlab.com when empty).
	BaseURL string
	// Project is the project's numeric id or its full path.
	Project string
	Token   string
	// Ref is the branch or tag to run (main when empty).
	Ref    string
	Client *http.Client
}

// Deliver implements Method. d.Body is the event's Quay payload.
func (g GitLabTrigger) Deliver(ctx context.Context, d Delivery) Result {
	var p map[string]any
	if err := json.Unmarshal(d.Body, &p); err != nil {
		return Result{Err: fmt.Errorf("gitlab_trigger: the payload is not a JSON object: %w", err)}
	}
	form := url.Values{"token": {g.Token}, "ref": {g.Ref}}
	if g.Ref == "" {
		form.Set("ref", "main")
	}
	for k, v := range TriggerVariables(p) {
		form.Set("variables["+k+"]", v)
	}
	base := strings.TrimSuffix(g.BaseURL, "/")
	if base == "" {
		base = "https://gitlab.com"
	}
	d.Body, d.ContentType = []byte(form.Encode()), "application/x-www-form-urlencoded"
	return send(ctx, g.Client, base+"/api/v4/projects/"+url.PathEscape(g.Project)+"/trigger/pipeline", d, nil, nil, g.Token)
}

// TriggerVariables are the payload's fields as CI variables: BERTH_EVENT,
// BERTH_REPOSITORY, BERTH_DOCKER_URL, BERTH_DIGEST, BERTH_TAGS (comma
// separated), BERTH_EVENT_ID and, for base_image_updated,
// BERTH_BASE_REPOSITORY, BERTH_BASE_TAG, BERTH_BASE_DOCKER_URL,
// BERTH_BASE_OLD_DIGEST and BERTH_BASE_NEW_DIGEST.
func TriggerVariables(p map[string]any) map[string]string {
	out := map[string]string{}
	set := func(k string, v any) {
		if s := str(v); s != "" {
			out[k] = s
		}
	}
	set("BERTH_EVENT", p["event"])
	set("BERTH_EVENT_ID", p["event_id"])
	set("BERTH_REPOSITORY", p["repository"])
	set("BERTH_DOCKER_URL", p["docker_url"])
	set("BERTH_DIGEST", p["digest"])
	tags := strs(p["tags"])
	if len(tags) == 0 {
		tags = strs(p["updated_tags"])
	}
	if len(tags) > 0 {
		out["BERTH_TAGS"] = strings.Join(tags, ",")
	}
	if b, ok := p["base"].(map[string]any); ok {
		set("BERTH_BASE_REPOSITORY", b["repository"])
		set("BERTH_BASE_TAG", b["tag"])
		set("BERTH_BASE_DOCKER_URL", b["docker_url"])
		set("BERTH_BASE_OLD_DIGEST", b["old_digest"])
		set("BERTH_BASE_NEW_DIGEST", b["new_digest"])
	}
	return out
}

// ValidateGitLabTrigger checks a gitlab_trigger configuration.
func ValidateGitLabTrigger(project, baseURL string) error {
	if strings.TrimSpace(project) == "" {
		return fmt.Errorf("project is required (its id or full path)")
	}
	if baseURL != "" {
		if u, err := url.Parse(baseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("base_url %q is not an http(s) URL", baseURL)
		}
	}
	return nil
}
