package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
)

// errPaused holds a delivery of a disabled notification until it is reset.
var errPaused = errors.New("notification disabled after consecutive failures; reset it to resume")

// Deliver is the job handler of the notify queue: it builds the payload of
// one event for one notification and sends it through the notification's
// method, recording the attempt. A failure is retried by the queue with
// backoff, for days, so a receiver's outage costs no event. Quay's
// counting: an event whose first 5 attempts failed counts one failure, a
// success resets the count, and at 3 the notification stops firing (its
// deliveries wait, in order) until it is reset.
func (s *Service) Deliver(ctx context.Context, j meta.Job) error {
	var dj meta.DeliveryJob
	if err := json.Unmarshal(j.Payload, &dj); err != nil {
		return jobs.Permanent(fmt.Errorf("delivery job %d: %w", j.ID, err))
	}
	n, err := s.db.NotificationByID(ctx, dj.NotificationID)
	if errors.Is(err, meta.ErrNotificationNotFound) {
		return nil // deleted since: nothing to deliver
	}
	if err != nil {
		return err
	}
	if n.NumberOfFailures >= meta.MaxNotificationFailures && !dj.Sample {
		return errPaused
	}
	d, err := s.build(ctx, n, dj)
	if err != nil {
		return jobs.Permanent(err)
	}
	method, err := s.method(n)
	if err != nil {
		return jobs.Permanent(err)
	}
	res := method.Deliver(ctx, d)
	a := meta.Attempt{NotificationID: n.ID, EventUUID: d.EventUUID, JobID: j.ID, Attempt: j.Attempts,
		StatusCode: res.StatusCode, LatencyMS: res.Latency.Milliseconds()}
	if res.Err != nil {
		a.Error = res.Err.Error()
	}
	if err := s.db.RecordAttempt(context.WithoutCancel(ctx), a, res.Err == nil); err != nil {
		s.log.Warn("record delivery attempt", "err", err)
	}
	if res.Err == nil {
		return nil
	}
	if j.Attempts == meta.NotifyTries && !dj.Sample {
		if count, err := s.db.NotificationFailed(context.WithoutCancel(ctx), n.ID); err == nil && count >= meta.MaxNotificationFailures {
			s.log.Warn("notification disabled after consecutive failures", "notification", n.UUID, "failures", count)
		}
	}
	return fmt.Errorf("deliver %s to notification %s: %w", d.EventUUID, n.UUID, res.Err)
}

func (s *Service) build(ctx context.Context, n meta.Notification, dj meta.DeliveryJob) (events.Delivery, error) {
	var payload map[string]any
	var e meta.Event
	var err error
	if dj.Sample {
		var ecfg map[string]any
		json.Unmarshal(n.EventConfig, &ecfg)
		payload, err = events.SamplePayloadConfig(s.opts.Server, n.Event, dj.Repository, ecfg)
		e = meta.Event{UUID: fmt.Sprintf("test-%d-%d", n.ID, time.Now().UnixNano()), Kind: n.Event, Repository: dj.Repository, CreatedAt: time.Now()}
	} else {
		if e, err = s.db.EventByID(ctx, dj.EventID); err != nil {
			return events.Delivery{}, err
		}
		payload, err = events.QuayPayload(s.opts.Server, e)
	}
	if err != nil {
		return events.Delivery{}, err
	}
	var cfg map[string]any
	json.Unmarshal(n.Config, &cfg)
	var body []byte
	switch {
	case n.Method == "slack":
		body = events.SlackBody(payload, n.Event)
	case cfg["template"] != nil && cfg["template"] != "":
		tmpl, err := templateJSON(cfg["template"])
		if err != nil {
			return events.Delivery{}, err
		}
		if body, err = events.Render(tmpl, payload); err != nil {
			return events.Delivery{}, fmt.Errorf("render template: %w", err)
		}
	case n.Format == "cloudevents":
		body, _ = json.Marshal(events.CloudEvent(s.opts.Server, e, payload))
	default:
		body, _ = json.Marshal(payload)
	}
	ct := "application/json"
	if n.Format == "cloudevents" && n.Method == "webhook" {
		ct = "application/cloudevents+json"
	}
	return events.Delivery{EventUUID: e.UUID, Kind: n.Event, Body: body, ContentType: ct}, nil
}

func (s *Service) method(n meta.Notification) (events.Method, error) {
	var cfg struct {
		URL          string            `json:"url"`
		Email        string            `json:"email"`
		Headers      map[string]string `json:"headers"`
		SecretSealed string            `json:"secret_sealed"`
	}
	if err := json.Unmarshal(n.Config, &cfg); err != nil {
		return nil, fmt.Errorf("notification %s config: %w", n.UUID, err)
	}
	switch n.Method {
	case "webhook":
		w := events.Webhook{URL: cfg.URL, Headers: cfg.Headers, Client: s.client}
		if cfg.SecretSealed != "" {
			secret, err := s.sealer.Open(cfg.SecretSealed)
			if err != nil {
				return nil, fmt.Errorf("notification %s secret: %w", n.UUID, err)
			}
			w.Secret = secret
		}
		return w, nil
	case "slack":
		return events.Slack{URL: cfg.URL, Client: s.client}, nil
	case "email":
		return events.Email{SMTPAddr: s.opts.SMTPAddr, From: s.opts.SMTPFrom, To: cfg.Email, Username: s.opts.SMTPUsername, Password: s.opts.SMTPPassword}, nil
	}
	return nil, fmt.Errorf("notification %s: unknown method %q", n.UUID, n.Method)
}
