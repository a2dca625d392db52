// Package smtpsink is a tiny SMTP server on loopback for tests: HELO and
// EHLO, STARTTLS (when given a certificate), AUTH PLAIN (when given a
// password), MAIL, RCPT, DATA, RSET, NOOP and QUIT. Every message it
// accepts is handed to Mails.
package smtpsink

import (
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// Mail is what the sink recorded of one message.
type Mail struct {
	Helo       string   // the HELO or EHLO argument
	From       string   // MAIL FROM's address, without brackets
	Rcpt       []string // RCPT TO's addresses, without brackets
	User, Pass string   // AUTH PLAIN's credentials
	Data       string   // the message, dot-unstuffed
	TLS        bool     // whether STARTTLS was used
}

// Options configure a sink.
type Options struct {
	// TLS, when set, offers STARTTLS with this configuration.
	TLS *tls.Config
	// Password, when set, offers AUTH PLAIN and accepts only it (535
	// otherwise).
	Password string
}

// Sink is a running server. A recipient whose address holds "reject" is
// refused with 550.
type Sink struct {
	Addr  string // host:port
	Mails <-chan Mail
	mails chan Mail
	opts  Options
}

// New starts a sink, stopped when the test ends.
func New(t testing.TB, opts Options) *Sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	mails := make(chan Mail, 16)
	s := &Sink{Addr: ln.Addr().String(), Mails: mails, mails: mails, opts: opts}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

// Next waits up to 10 s for the next message.
func (s *Sink) Next(t testing.TB) Mail {
	t.Helper()
	select {
	case m := <-s.mails:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no mail arrived")
		return Mail{}
	}
}

// None checks that no message is waiting.
func (s *Sink) None(t testing.TB) {
	t.Helper()
	select {
	case m := <-s.mails:
		t.Fatalf("unexpected mail to %v", m.Rcpt)
	default:
	}
}

// address is the address of a MAIL FROM or RCPT TO argument
// ("FROM:<a@b> BODY=8BITMIME" → "a@b").
func address(arg, prefix string) string {
	rest := strings.TrimSpace(arg)
	if len(rest) >= len(prefix) && strings.EqualFold(rest[:len(prefix)], prefix) {
		rest = strings.TrimSpace(rest[len(prefix):])
	}
	if i := strings.IndexByte(rest, '>'); strings.HasPrefix(rest, "<") && i > 0 {
		return rest[1:i]
	}
	addr, _, _ := strings.Cut(rest, " ")
	return addr
}

func (s *Sink) serve(c net.Conn) {
	defer func() { c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(c)
	var m Mail
	reply := func(line string) { _ = tp.PrintfLine("%s", line) }
	reply("220 sink ESMTP")
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "HELO":
			m.Helo = arg
			reply("250 sink")
		case "EHLO":
			m.Helo = arg
			lines := []string{"250-sink", "250-8BITMIME"}
			if s.opts.TLS != nil && !m.TLS {
				lines = append(lines, "250-STARTTLS")
			}
			if s.opts.Password != "" {
				lines = append(lines, "250-AUTH PLAIN")
			}
			for _, l := range append(lines, "250 HELP") {
				reply(l)
			}
		case "STARTTLS":
			if s.opts.TLS == nil {
				reply("502 no TLS")
				continue
			}
			reply("220 go ahead")
			tc := tls.Server(c, s.opts.TLS)
			if tc.Handshake() != nil {
				return
			}
			c, m.TLS = tc, true
			tp = textproto.NewConn(tc)
		case "AUTH":
			mech, ir, _ := strings.Cut(arg, " ")
			raw, err := base64.StdEncoding.DecodeString(ir)
			parts := strings.Split(string(raw), "\x00")
			if s.opts.Password == "" || mech != "PLAIN" || err != nil || len(parts) != 3 {
				reply("501 bad AUTH")
				continue
			}
			m.User, m.Pass = parts[1], parts[2]
			if m.Pass != s.opts.Password {
				reply("535 5.7.8 authentication failed")
				continue
			}
			reply("235 ok")
		case "MAIL":
			m.From, m.Rcpt, m.Data = address(arg, "FROM:"), nil, ""
			reply("250 ok")
		case "RCPT":
			if strings.Contains(arg, "reject") {
				reply("550 5.1.1 no such user")
				continue
			}
			m.Rcpt = append(m.Rcpt, address(arg, "TO:"))
			reply("250 ok")
		case "DATA":
			reply("354 go on")
			b, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			m.Data = string(b)
			reply("250 queued")
			s.mails <- m
		case "RSET", "NOOP":
			reply("250 ok")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("502 unknown")
		}
	}
}
