package events

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"slices"
	"strings"
	"time"
)

// EmailTimeout bounds one email delivery, connection to QUIT.
const EmailTimeout = 30 * time.Second

// Email sends the delivery as a plain-text email through an SMTP relay,
// upgrading to TLS with STARTTLS whenever the server offers it and
// authenticating with PLAIN when Username is set (net/smtp refuses to
// send a password over an unencrypted connection except to localhost).
type Email struct {
	SMTPAddr string // host:port of the relay
	From     string
	To       string // one address, or a comma-separated list
	// Recipients, when set, are To parsed already (a caller that
	// filtered the list hands it over): To is not parsed again.
	Recipients []*mail.Address
	Username   string
	Password   string
	// TLS configures STARTTLS (e.g. a private CA); nil verifies the
	// relay's certificate against the system roots.
	TLS *tls.Config
	// Hostname is announced in EHLO; empty is "localhost".
	Hostname string
}

// Deliver implements Method. A JSON payload (the default body) becomes a
// readable message (see EmailText); any other body is sent as it is.
func (m Email) Deliver(ctx context.Context, d Delivery) (res Result) {
	start := time.Now()
	defer func() { res.Latency = time.Since(start) }()
	from, err := mail.ParseAddress(m.From)
	if err != nil {
		res.Err = fmt.Errorf("email: sender %q: %w", m.From, err)
		return res
	}
	to, err := m.recipients()
	if err != nil {
		res.Err = err
		return res
	}
	msg, err := m.message(d, from, to, start)
	if err != nil {
		res.Err = fmt.Errorf("email: %w", err)
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, EmailTimeout)
	defer cancel()
	err = m.send(ctx, from.Address, to, msg)
	if err != nil {
		var tpe *textproto.Error
		if errors.As(err, &tpe) {
			res.StatusCode = tpe.Code
			res.ResponseSnippet = tpe.Msg
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		res.Err = m.relayError(err)
		return res
	}
	res.StatusCode = 250
	return res
}

// recipients are Recipients, or To parsed.
func (m Email) recipients() ([]*mail.Address, error) {
	if m.Recipients != nil {
		return m.Recipients, nil
	}
	to, err := mail.ParseAddressList(m.To)
	if err != nil {
		return nil, fmt.Errorf("email: recipient %q: %w", m.To, err)
	}
	return to, nil
}

// SendText mails a plain-text message of Berth's own (not a delivery)
// to m.To through the relay, as Deliver does, bounded by EmailTimeout.
func (m Email) SendText(ctx context.Context, subject, text string) error {
	from, err := mail.ParseAddress(m.From)
	if err != nil {
		return fmt.Errorf("email: sender %q: %w", m.From, err)
	}
	to, err := m.recipients()
	if err != nil {
		return err
	}
	msg, err := compose(subject, text, Delivery{}, from, to, time.Now())
	if err != nil {
		return fmt.Errorf("email: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, EmailTimeout)
	defer cancel()
	if err := m.send(ctx, from.Address, to, msg); err != nil {
		return m.relayError(err)
	}
	return nil
}

// RelayError is a failure to mail through the SMTP relay as whoever asked
// for the mail reads it (a notification's attempts and disabled_reason,
// shown to the admins of its repository or organization): it says what
// failed, but not the relay's address nor, for a name, the addresses or
// DNS server it resolved with, which are the registry's internal
// network. Detail says them for the operator's log.
type RelayError struct {
	Addr string // the relay's host:port
	Err  error  // the failure (without the SMTP password)
}

// Error is the failure without the relay's addresses.
func (e *RelayError) Error() string {
	msg := e.Err.Error()
	for _, a := range relayAddrs(e.Addr, e.Err) {
		msg = strings.ReplaceAll(msg, a, "[relay]")
	}
	return "email via the SMTP relay: " + msg
}

// Detail is the failure for the operator's log, naming the relay.
func (e *RelayError) Detail() string { return fmt.Sprintf("email via %s: %v", e.Addr, e.Err) }

// Unwrap makes the failure's own errors (a timeout, an SMTP reply) seen.
func (e *RelayError) Unwrap() error { return e.Err }

func (m Email) relayError(err error) error {
	return &RelayError{Addr: m.SMTPAddr, Err: redactErr(err, secretStrings(nil, []byte(m.Password)))}
}

// relayAddrs are the strings of err that name the relay at addr: addr,
// its host (an IP or a domain name; a bare name such as "smtp" would
// replace words of the error), the address dialed, the DNS server asked;
// longest first, so that host:port goes before its host.
func relayAddrs(addr string, err error) []string {
	out := []string{addr}
	withHost := func(hostport string) {
		if host, _, splitErr := net.SplitHostPort(hostport); splitErr == nil && strings.ContainsAny(host, ".:") {
			out = append(out, host)
		}
	}
	withHost(addr)
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Addr != nil {
		out = append(out, oe.Addr.String())
		withHost(oe.Addr.String())
	}
	var de *net.DNSError
	if errors.As(err, &de) && de.Server != "" {
		out = append(out, de.Server)
	}
	out = slices.DeleteFunc(out, func(s string) bool { return s == "" })
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// message builds the RFC 5322 message, lines ending in CRLF.
func (m Email) message(d Delivery, from *mail.Address, to []*mail.Address, now time.Time) ([]byte, error) {
	subject := "Berth notification: " + d.Kind
	text := string(d.Body)
	if ct := d.ContentType; ct == "" || strings.HasPrefix(ct, "application/json") {
		var payload map[string]any
		if err := json.Unmarshal(d.Body, &payload); err == nil && payload != nil {
			subject, text = EmailText(payload, d.Kind)
		}
	}
	return compose(subject, text, d, from, to, now)
}

// compose writes the message of subject and text; d's event UUID and kind,
// if set, become its Message-ID and X-Berth headers.
func compose(subject, text string, d Delivery, from *mail.Address, to []*mail.Address, now time.Time) ([]byte, error) {
	subject = strings.Join(strings.Fields(subject), " ") // no header injection
	if len(subject) > 200 {
		subject = strings.ToValidUTF8(subject[:200], "") + "…"
	}
	rcpts := make([]string, len(to))
	for i, a := range to {
		rcpts[i] = a.String()
	}
	domain := from.Address[strings.LastIndexByte(from.Address, '@')+1:]
	var b bytes.Buffer
	hdr := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	hdr("From", from.String())
	hdr("To", strings.Join(rcpts, ", "))
	hdr("Subject", mime.QEncoding.Encode("utf-8", subject))
	hdr("Date", now.Format(time.RFC1123Z))
	if d.EventUUID != "" && validHeaderToken(d.EventUUID) {
		hdr("Message-ID", "<berth."+d.EventUUID+"@"+domain+">")
		hdr("X-Berth-Delivery", d.EventUUID)
	}
	if d.Kind != "" && validHeaderToken(d.Kind) {
		hdr("X-Berth-Event", d.Kind)
	}
	hdr("Auto-Submitted", "auto-generated")
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	hdr("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	if _, err := qp.Write([]byte(strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\n", "\r\n"))); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func validHeaderToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, "\r\n<>@ \t\x00")
}

// send runs one SMTP conversation, bounded by ctx.
func (m Email) send(ctx context.Context, from string, to []*mail.Address, msg []byte) error {
	host, _, err := net.SplitHostPort(m.SMTPAddr)
	if err != nil {
		return fmt.Errorf("SMTP address: %w", err)
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", m.SMTPAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	// When ctx ends, every blocked read or write fails at once (and
	// ctx.Err() is already set, so the error says why).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	defer c.Close()
	hello := m.Hostname
	if hello == "" {
		hello = "localhost"
	}
	if err := c.Hello(hello); err != nil {
		return err
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if m.TLS != nil {
			cfg = m.TLS.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		if err := c.StartTLS(cfg); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
	}
	if m.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return errors.New("the SMTP server offers no AUTH, but a username is configured")
		}
		if err := c.Auth(smtp.PlainAuth("", m.Username, m.Password, host)); err != nil {
			return fmt.Errorf("SMTP AUTH: %w", err)
		}
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, a := range to {
		if err := c.Rcpt(a.Address); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}
