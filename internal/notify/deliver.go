package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
)

// errPaused is why a delivery is held: its notification is disabled for a
// while.
var errPaused = errors.New("notification disabled for a while after consecutive failures; held until its trial delivery succeeds or it is reset")

// heldRecheck bounds how long a held delivery waits before it looks at its
// notification again. A reset, a successful trial or a disable until
// reset releases held deliveries at once (meta.ReleaseJobs); this only
// bounds the wait should that be missed (a reset by an older version
// during an upgrade).
const heldRecheck = 5 * time.Minute

// trialHold is how long a trial delivery holds the other deliveries of its
// notification, should its process die before it reports (after a
// success they are released at once; after a failure they wait for the
// renewed disable): long enough for a delivery by the notification's
// method to time out, with trialMargin for the rest of the attempt, and
// no longer than the first disable. A hold shorter than the method's
// timeout (an email's is 30 s) let a second trial go while the first
// waited on a slow relay, and each failed trial doubles the disable.
func (s *Service) trialHold(method string) time.Duration {
	return min(deliveryTimeout(method)+trialMargin, s.opts.DisableFor)
}

// trialMargin is the time a trial delivery may spend beyond its method's
// timeout: building the delivery, waiting for the event to be on disk,
// recording the attempt.
const trialMargin = events.DeliveryTimeout

// deliveryTimeout bounds one delivery by a method.
func deliveryTimeout(method string) time.Duration {
	if method == "email" {
		return events.EmailTimeout
	}
	return events.DeliveryTimeout // webhooks, Slack, pipeline triggers
}

// Deliver is the job handler of the notify queue: it builds the payload of
// one event for one notification and sends it through the notification's
// method, recording the attempt. A failure is retried by the queue with
// backoff, for days, so a receiver's outage costs no event.
//
// Failures are counted as Quay does: every 5th failed attempt of an event
// counts one failure, a success resets the count, and at 3 the
// notification stops firing. An event whose counted attempt the receiver
// refused (a 4xx other than 408 and 429; or its host name does not exist,
// or the SSRF guard refused its address: see misdirected) is dropped
// then, its job ended, so that the stream's next events go. Then GitLab's
// rule applies: when the receiver refused it stays disabled until it is
// reset, and, as in Quay, its deliveries end undelivered (the
// subscriber queues none meanwhile); otherwise it is disabled for
// Options.DisableFor, after which one trial delivery goes, and each failed
// trial doubles the next disable (up to Options.MaxDisableFor). Meanwhile
// its deliveries are held (jobs.Defer: no attempt spent, no backoff
// grown), in order; a reset or a successful trial releases them all at
// once.
//
// A delivery that cannot be made as the notification is configured (its
// template renders too large a body for the event, a stored secret does
// not open, the HTTP client refuses a header value or the URL: see
// events.ErrUnsendable) is recorded as a failed attempt and counted as a
// refusal, and its job ends: retrying would meet the same error.
//
// A delivery that ctx's end (shutdown, a lost lease) interrupted before
// the receiver answered is neither recorded nor counted: its error goes
// back to the queue, which runs it again.
//
// A test delivery (meta.DeliveryJob.Sample) is recorded like any other
// attempt but counts nothing: as in Quay, it does not touch the failure
// count, whatever its outcome.
//
// An event's delivery is sent only once Stores.Durable says everything
// the store committed so far would survive a power cut: a receiver never
// hears of a push (or of a trigger the graph appended) that a power cut
// then erases.
func (s *Service) Deliver(ctx context.Context, j meta.Job) error {
	var dj meta.DeliveryJob
	if err := json.Unmarshal(j.Payload, &dj); err != nil {
		return jobs.Permanent(fmt.Errorf("delivery job %d: %w", j.ID, err))
	}
	n, err := s.stores.Notifications.NotificationByID(ctx, dj.NotificationID)
	if errors.Is(err, meta.ErrNotificationNotFound) {
		return nil // deleted since: nothing to deliver
	}
	if err != nil {
		return err
	}
	// Stored in clear by an older version: sealed now, and delivered from
	// n as read (method opens a secret sealed or reads one in clear), so
	// that a seal that fails costs no signature nor header.
	if _, err := s.sealStored(ctx, n); err != nil {
		s.log.Warn("seal notification secrets stored in clear", "notification", n.UUID, "err", err)
	}
	trial := false
	if n.Disabled() && !dj.Sample {
		if n.DisabledUntilReset() {
			// Quay's notification stops firing: the event is not delivered
			// (nor queued, once the subscriber has seen the disable).
			s.log.Debug("delivery dropped: notification disabled until reset", "notification", n.UUID, "job", j.ID)
			return nil
		}
		if trial, err = s.mayTry(ctx, n); !trial {
			if s.opts.Metrics != nil && errors.Is(err, errPaused) {
				s.opts.Metrics.Delivery(n.Method, "held")
			}
			return err
		}
	}
	d, err := s.build(ctx, n, dj)
	var te transient
	var ce configError
	switch {
	case errors.As(err, &te):
		return te.err
	case errors.As(err, &ce):
		return s.undeliverable(ctx, n, j, dj, d.EventUUID, trial, err)
	case err != nil:
		return jobs.Permanent(err)
	}
	method, err := s.method(n)
	if err != nil {
		return s.undeliverable(ctx, n, j, dj, d.EventUUID, trial, err)
	}
	var skipped []string
	if em, ok := method.(events.Email); ok {
		// Only addresses confirmed for the target (still) receive it.
		if em, skipped, err = s.confirmedRecipients(ctx, n, em); err != nil {
			return fmt.Errorf("deliver %s to notification %s: %w", d.EventUUID, n.UUID, err)
		}
		if em.To == "" {
			return s.undeliverable(ctx, n, j, dj, d.EventUUID, trial, fmt.Errorf("not deliverable: no address is confirmed for %s (%s): %s",
				targetName(n.Scope, n.Target), strings.Join(skipped, ", "), AuthorizeHint(n.Scope, n.Target)))
		}
		method = em
	}
	// Nothing goes out before the event is on disk: a commit is visible,
	// and this delivery queued and claimed (laxly), one log flush before
	// the commit would survive a power cut. A test delivery carries no
	// event.
	if !dj.Sample && s.stores.Durable != nil {
		if err := s.stores.Durable.WaitDurable(ctx); err != nil {
			return fmt.Errorf("deliver %s to notification %s: wait until the event is on disk: %w", d.EventUUID, n.UUID, err)
		}
	}
	res := method.Deliver(ctx, d)
	if res.Err != nil && ctx.Err() != nil {
		// Shutdown or a lost lease cut the delivery short: that says
		// nothing of the receiver, so nothing is recorded or counted (a
		// trial's failure would double the disable); the queue runs it
		// again, as interrupted.
		return fmt.Errorf("deliver %s to notification %s: interrupted: %w", d.EventUUID, n.UUID, res.Err)
	}
	if errors.Is(res.Err, events.ErrUnsendable) {
		// The client would not send it as configured (stored by an
		// earlier version that let it through): no receiver was asked.
		return s.undeliverable(ctx, n, j, dj, d.EventUUID, trial, res.Err)
	}
	if s.opts.Metrics != nil {
		outcome := "success"
		if res.Err != nil {
			outcome = "failure"
		}
		s.opts.Metrics.Delivery(n.Method, outcome)
	}
	a := meta.Attempt{NotificationID: n.ID, EventUUID: d.EventUUID, JobID: j.ID, Attempt: j.Attempts,
		StatusCode: res.StatusCode, LatencyMS: res.Latency.Milliseconds()}
	if res.Err != nil {
		a.Error = res.Err.Error()
		s.logRefused(res.Err, "notification", n.UUID)
		s.logRelay(res.Err, "notification", n.UUID)
	}
	if len(skipped) > 0 {
		note := fmt.Sprintf("skipped, not confirmed for %s: %s", targetName(n.Scope, n.Target), strings.Join(skipped, ", "))
		a.Error = strings.TrimPrefix(a.Error+"; "+note, "; ")
	}
	// A success is recorded in the write that completes the job, if the
	// worker can (jobs.OnComplete): one write per delivery, not two. A
	// test's success leaves the failure count alone (Quay's test does).
	success := res.Err == nil
	reset := success && !dj.Sample
	record := func(ctx context.Context, tx meta.Tx) error {
		return s.stores.Outcomes.RecordAttemptIn(ctx, tx, a, reset)
	}
	if !success || !jobs.OnComplete(ctx, record) {
		if err := s.stores.Outcomes.RecordAttempt(context.WithoutCancel(ctx), a, reset); err != nil {
			s.log.Warn("record delivery attempt", "err", err)
		}
	}
	if res.Err == nil {
		if n.Disabled() && !dj.Sample {
			s.log.Info("notification re-enabled by a successful delivery", "notification", n.UUID)
		}
		return nil
	}
	err = fmt.Errorf("deliver %s to notification %s: %w", d.EventUUID, n.UUID, res.Err)
	if !dj.Sample && (trial || j.Attempts%meta.NotifyTries == 0) {
		f := meta.NotificationFailure{Reason: res.Err.Error(), Trial: trial}
		if n.Method != "email" { // an SMTP 4xx reply is transient; the relay is the operator's
			f.Refused = refused(res.StatusCode) || misdirected(res.Err)
		}
		s.failed(context.WithoutCancel(ctx), n, f)
		if f.Refused && j.Attempts >= refusedDropAfter {
			// Refused for minutes, not fixed by waiting: the event is
			// dropped, so that the stream's next events go (the receiver
			// may take them, as it may the other repositories' of an
			// organization's or the registry's notification, whose
			// successes reset the count). A refusal that passes (a
			// receiver redeployed, a DNS record changing) is retried.
			return jobs.Permanent(err)
		}
	}
	return err
}

// refusedDropAfter is the attempt at which an event its receiver still
// refuses is dropped: its second counted failure, some minutes after the
// first attempt with the default backoff (a third counted failure of a
// notification with no success between disables it until reset).
const refusedDropAfter = 2 * meta.NotifyTries

// misdirected reports whether a delivery failed because its target
// cannot be reached as configured: the SSRF guard refused the address
// its host name resolves to, or the name does not exist (NXDOMAIN; a
// name that does not resolve yet is accepted when the notification is
// created). Like a receiver's refusal, waiting does not fix it.
func misdirected(err error) bool {
	var de *net.DNSError
	return errors.Is(err, events.ErrRefused) || errors.As(err, &de) && de.IsNotFound
}

// configError is an error of build that comes from the notification's
// configuration (its template), not from the event: it recurs at every
// attempt until someone changes the notification.
type configError struct{ err error }

func (c configError) Error() string { return c.err.Error() }
func (c configError) Unwrap() error { return c.err }

// undeliverable ends the job of a delivery that the notification's
// configuration makes impossible (err, which carries no secret: see
// build and method): the attempt is recorded, so the notification's
// admins see why, and counted as a refusal (not for a test delivery),
// so that a notification whose every delivery fails so stops firing
// until it is fixed and reset.
func (s *Service) undeliverable(ctx context.Context, n meta.Notification, j meta.Job, dj meta.DeliveryJob, eventUUID string, trial bool, err error) error {
	ctx = context.WithoutCancel(ctx)
	if s.opts.Metrics != nil {
		s.opts.Metrics.Delivery(n.Method, "failure")
	}
	a := meta.Attempt{NotificationID: n.ID, EventUUID: eventUUID, JobID: j.ID, Attempt: j.Attempts, Error: err.Error()}
	if rerr := s.stores.Outcomes.RecordAttempt(ctx, a, false); rerr != nil {
		s.log.Warn("record delivery attempt", "err", rerr)
	}
	s.log.Warn("notification cannot deliver as configured", "notification", n.UUID, "event", eventUUID, "err", err)
	if !dj.Sample {
		s.failed(ctx, n, meta.NotificationFailure{Reason: err.Error(), Refused: true, Trial: trial})
	}
	return jobs.Permanent(fmt.Errorf("deliver %s to notification %s: %w", eventUUID, n.UUID, err))
}

// transient is an error of build that another attempt may not meet (a
// read of the store that failed), where build's other errors (an event
// that is gone, a template that does not render) would recur every time.
type transient struct{ err error }

func (t transient) Error() string { return t.err.Error() }
func (t transient) Unwrap() error { return t.err }

// mayTry decides what a delivery of a notification disabled for a while
// does: it is held (a jobs.Defer error), or it is the trial delivery
// (true).
func (s *Service) mayTry(ctx context.Context, n meta.Notification) (bool, error) {
	now := s.now()
	switch {
	case now.Before(n.DisabledUntil):
		until := n.DisabledUntil
		if recheck := now.Add(heldRecheck); recheck.Before(until) {
			until = recheck
		}
		return false, jobs.Defer(until, errPaused)
	}
	ok, err := s.stores.Outcomes.ClaimNotificationTrial(ctx, n.ID, n.DisabledUntil, now.Add(s.trialHold(n.Method)))
	if err != nil {
		return false, err
	}
	if !ok { // another delivery is the trial
		return false, jobs.Defer(now.Add(s.trialHold(n.Method)), errPaused)
	}
	return true, nil
}

// failed counts a failed event (or trial) and logs a change of state.
func (s *Service) failed(ctx context.Context, n meta.Notification, f meta.NotificationFailure) {
	f.DisableFor, f.MaxDisableFor = s.opts.DisableFor, s.opts.MaxDisableFor
	fresh, err := s.stores.Outcomes.NotificationFailed(ctx, n.ID, f)
	switch {
	case err != nil:
		if !errors.Is(err, meta.ErrNotificationNotFound) {
			s.log.Warn("count notification failure", "notification", n.UUID, "err", err)
		}
	case !fresh.Disabled() || (n.Disabled() && fresh.DisabledUntil.Equal(n.DisabledUntil)):
		// not disabled, or its disable unchanged
	case fresh.DisabledUntil.IsZero():
		s.log.Warn("notification disabled until reset", "notification", n.UUID,
			"failures", fresh.NumberOfFailures, "reason", fresh.DisabledReason)
		// Its deliveries held or backing off run now, to end undelivered
		// (Deliver), rather than at their recheck or retry. Not in
		// NotificationFailed's transaction: that one locks the
		// notification, and a delivery's completion locks its job first.
		if _, err := s.stores.Jobs.ReleaseJobs(ctx, meta.NotifyQueue, n.UUID+"|"); err != nil {
			s.log.Warn("release the deliveries of a notification disabled until reset", "notification", n.UUID, "err", err)
		}
	default:
		s.log.Warn("notification disabled for a while", "notification", n.UUID,
			"failures", fresh.NumberOfFailures, "until", fresh.DisabledUntil, "reason", fresh.DisabledReason)
	}
}

// refused reports whether an HTTP receiver's answer says that it will not
// accept the deliveries as configured: a 4xx other than 408 Request
// Timeout and 429 Too Many Requests, which are temporary.
func refused(status int) bool {
	return status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
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
		if e, err = s.stores.Outbox.EventByID(ctx, dj.EventID); err != nil {
			if !errors.Is(err, meta.ErrNotFound) {
				err = transient{err} // the database, not the event: try again
			}
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
	ct := "application/json"
	switch {
	case n.Method == "slack":
		body = events.SlackBody(payload, n.Event)
	case n.Method == events.MethodGitHubDispatch || n.Method == events.MethodGitLabTrigger:
		body, _ = json.Marshal(payload) // the method picks its fields

	case n.Method == "webhook" && cfg["template"] != nil && cfg["template"] != "":
		// Only a webhook's (Create refuses others; one stored before is
		// ignored: an email is Berth's own message).
		tmpl, err := templateJSON(cfg["template"])
		if err != nil {
			return events.Delivery{EventUUID: e.UUID}, configError{fmt.Errorf("template: %w", err)}
		}
		if body, err = events.Render(tmpl, payload); err != nil {
			return events.Delivery{EventUUID: e.UUID}, configError{fmt.Errorf("render template: %w", err)}
		}
	case n.Format == "cloudevents":
		body, _ = json.Marshal(events.CloudEvent(s.opts.Server, e, payload))
		if n.Method == "webhook" {
			ct = "application/cloudevents+json"
		}
	default:
		body, _ = json.Marshal(payload)
	}
	return events.Delivery{EventUUID: e.UUID, Kind: n.Event, Body: body, ContentType: ct}, nil
}

// method returns the method that delivers for n. A webhook's signing
// secret is opened from its sealed form or, as an older version stored
// it (and until sealStored seals it), read in clear: either way its
// deliveries are signed.
func (s *Service) method(n meta.Notification) (events.Method, error) {
	var cfg struct {
		URL          string `json:"url"`
		Email        string `json:"email"`
		Secret       any    `json:"secret"`
		SecretSealed string `json:"secret_sealed"`
	}
	if err := json.Unmarshal(n.Config, &cfg); err != nil {
		return nil, fmt.Errorf("notification %s config: %w", n.UUID, err)
	}
	switch n.Method {
	case "webhook":
		headers, err := s.openHeaders(n)
		if err != nil {
			return nil, err
		}
		w := events.Webhook{URL: cfg.URL, Headers: headers, Client: s.client}
		if cfg.SecretSealed != "" {
			secret, err := s.sealer.Open(cfg.SecretSealed)
			if err != nil {
				return nil, fmt.Errorf("notification %s secret: %w", n.UUID, err)
			}
			w.Secret = secret
		} else if clear, ok := cfg.Secret.(string); ok {
			w.Secret = []byte(clear)
		}
		return w, nil
	case "slack":
		return events.Slack{URL: cfg.URL, Client: s.client}, nil
	case events.MethodGitHubDispatch, events.MethodGitLabTrigger:
		return s.trigger(n)
	case "email":
		return events.Email{SMTPAddr: s.opts.SMTPAddr, From: s.opts.SMTPFrom, To: cfg.Email, Username: s.opts.SMTPUsername, Password: s.opts.SMTPPassword}, nil
	}
	return nil, fmt.Errorf("notification %s: unknown method %q", n.UUID, n.Method)
}
