package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
)

// Keys of a trigger method's config: the token is sealed like a webhook's
// secret.
const (
	keyToken       = "token"
	keyTokenSealed = "token_sealed"
)

// checkTrigger validates a github_dispatch or gitlab_trigger config: its
// fields, a token, and an API address the SSRF guard allows.
func (s *Service) checkTrigger(ctx context.Context, method string, cfg map[string]any) error {
	str := func(k string) (string, error) {
		v, ok := cfg[k]
		if !ok || v == nil {
			return "", nil
		}
		sv, ok := v.(string)
		if !ok {
			return "", invalid("config.%s must be a string", k)
		}
		return sv, nil
	}
	if _, ok := cfg[keyTokenSealed]; ok {
		return invalid("config.%s is set by Berth", keyTokenSealed)
	}
	token, err := str(keyToken)
	if err != nil {
		return err
	}
	if token == "" {
		return invalid("config.token is required")
	}
	if !httpguts.ValidHeaderFieldValue(token) || strings.TrimSpace(token) != token {
		// GitHub's goes in a header, which HTTP would refuse to send at
		// every delivery; a pasted newline or space is no token's.
		return invalid("config.token holds white space around it or a control character")
	}
	var api string
	switch method {
	case events.MethodGitHubDispatch:
		repo, err := str("repository")
		if err != nil {
			return err
		}
		et, err := str("event_type")
		if err != nil {
			return err
		}
		if api, err = str("api_url"); err != nil {
			return err
		}
		if err := events.ValidateGitHubDispatch(repo, et, api); err != nil {
			return invalid("config: %v", err)
		}
		if api == "" {
			api = "https://api.github.com"
		}
	case events.MethodGitLabTrigger:
		project, err := str("project")
		if err != nil {
			return err
		}
		if _, err := str("ref"); err != nil {
			return err
		}
		if api, err = str("base_url"); err != nil {
			return err
		}
		if err := events.ValidateGitLabTrigger(project, api); err != nil {
			return invalid("config: %v", err)
		}
		if api == "" {
			api = "https://gitlab.com"
		}
	}
	if s.opts.Guard != nil {
		var dnsErr *net.DNSError
		if err := s.opts.Guard.CheckURL(ctx, api); err != nil && !errors.As(err, &dnsErr) {
			s.logRefused(err, "method", method)
			return invalid("config: %v", err)
		}
	}
	return nil
}

// trigger builds the delivery method of a github_dispatch or
// gitlab_trigger notification, its token opened.
func (s *Service) trigger(n meta.Notification) (events.Method, error) {
	var cfg struct {
		TokenSealed string `json:"token_sealed"`
		Repository  string `json:"repository"`
		EventType   string `json:"event_type"`
		APIURL      string `json:"api_url"`
		Project     string `json:"project"`
		Ref         string `json:"ref"`
		BaseURL     string `json:"base_url"`
	}
	if err := json.Unmarshal(n.Config, &cfg); err != nil {
		return nil, fmt.Errorf("notification %s config: %w", n.UUID, err)
	}
	token, err := s.sealer.Open(cfg.TokenSealed)
	if err != nil {
		return nil, fmt.Errorf("notification %s token: %w", n.UUID, err)
	}
	if n.Method == events.MethodGitHubDispatch {
		return events.GitHubDispatch{APIURL: cfg.APIURL, Repository: cfg.Repository, Token: string(token), EventType: cfg.EventType, Client: s.client}, nil
	}
	return events.GitLabTrigger{BaseURL: cfg.BaseURL, Project: cfg.Project, Token: string(token), Ref: cfg.Ref, Client: s.client}, nil
}
