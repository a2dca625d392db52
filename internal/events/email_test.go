package events

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
)

// sunkMail is what the SMTP sink recorded for one message.
type sunkMail struct {
	helo, from, user, pass string
	rcpt                   []string
	data                   string
	tls                    bool
}

// smtpSink is a tiny SMTP server on loopback: HELO/EHLO, STARTTLS (when
// given a certificate), AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
type smtpSink struct {
	addr  string
	tls   *tls.Config
	auth  bool
	mails chan sunkMail
}

func newSMTPSink(t *testing.T, tlsCfg *tls.Config, auth bool) *smtpSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &smtpSink{addr: ln.Addr().String(), tls: tlsCfg, auth: auth, mails: make(chan sunkMail, 8)}
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

func (s *smtpSink) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(c)
	var m sunkMail
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
			m.helo = arg
			reply("250 sink")
		case "EHLO":
			m.helo = arg
			lines := []string{"250-sink", "250-8BITMIME"}
			if s.tls != nil && !m.tls {
				lines = append(lines, "250-STARTTLS")
			}
			if s.auth {
				lines = append(lines, "250-AUTH PLAIN")
			}
			for _, l := range append(lines, "250 HELP") {
				reply(l)
			}
		case "STARTTLS":
			reply("220 go ahead")
			tc := tls.Server(c, s.tls)
			if tc.Handshake() != nil {
				return
			}
			c, m.tls = tc, true
			tp = textproto.NewConn(tc)
		case "AUTH":
			mech, ir, _ := strings.Cut(arg, " ")
			raw, err := base64.StdEncoding.DecodeString(ir)
			parts := strings.Split(string(raw), "\x00")
			if mech != "PLAIN" || err != nil || len(parts) != 3 {
				reply("501 bad AUTH")
				continue
			}
			m.user, m.pass = parts[1], parts[2]
			if m.pass != "right" {
				reply("535 5.7.8 authentication failed")
				continue
			}
			reply("235 ok")
		case "MAIL":
			m.from = arg
			reply("250 ok")
		case "RCPT":
			if strings.Contains(arg, "reject") {
				reply("550 5.1.1 no such user")
				continue
			}
			m.rcpt = append(m.rcpt, arg)
			reply("250 ok")
		case "DATA":
			reply("354 go on")
			b, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			m.data = string(b)
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

func (s *smtpSink) next(t *testing.T) sunkMail {
	t.Helper()
	select {
	case m := <-s.mails:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no mail arrived")
	}
	return sunkMail{}
}

// selfSigned returns a server config for 127.0.0.1 and a client config
// trusting it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sink"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: pool}
}

func emailDelivery(t *testing.T) Delivery {
	t.Helper()
	p, err := SamplePayload(testServer, meta.EventRepoPush, "ns/app")
	if err != nil {
		t.Fatal(err)
	}
	d := pushDelivery(t)
	d.Body = mustMarshal(t, p)
	return d
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEmailDelivers(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	tests := []struct {
		name     string
		tls      bool
		auth     bool
		user     string
		wantTLS  bool
		wantUser string
	}{
		{name: "plain relay"},
		{name: "AUTH PLAIN on loopback", auth: true, user: "berth", wantUser: "berth"},
		{name: "STARTTLS when offered", tls: true, wantTLS: true},
		{name: "STARTTLS then AUTH", tls: true, auth: true, user: "berth", wantTLS: true, wantUser: "berth"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var srv *tls.Config
			if tc.tls {
				srv = serverTLS
			}
			sink := newSMTPSink(t, srv, tc.auth)
			m := Email{SMTPAddr: sink.addr, From: "Berth <berth@reg.example>", To: "ops@example.com, dev@example.com",
				Username: tc.user, Password: "right", TLS: clientTLS, Hostname: "reg.example"}
			d := emailDelivery(t)
			res := m.Deliver(context.Background(), d)
			if res.Err != nil {
				t.Fatalf("Deliver: %v", res.Err)
			}
			if res.StatusCode != 250 || res.Latency <= 0 {
				t.Errorf("result %+v", res)
			}
			got := sink.next(t)
			if got.helo != "reg.example" || !strings.HasPrefix(got.from, "FROM:<berth@reg.example>") || got.tls != tc.wantTLS || got.user != tc.wantUser ||
				strings.Join(got.rcpt, " ") != "TO:<ops@example.com> TO:<dev@example.com>" {
				t.Errorf("sink saw %+v", got)
			}
			msg, err := mail.ReadMessage(strings.NewReader(got.data))
			if err != nil {
				t.Fatalf("message: %v\n%s", err, got.data)
			}
			subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
			if err != nil || subject != "Berth: pushed tags latest, foo to ns/app" {
				t.Errorf("Subject %q (%v)", subject, err)
			}
			if msg.Header.Get("X-Berth-Event") != "repo_push" || msg.Header.Get("X-Berth-Delivery") != d.EventUUID ||
				msg.Header.Get("Message-Id") != "<berth."+d.EventUUID+"@reg.example>" ||
				!strings.HasPrefix(msg.Header.Get("Content-Type"), "text/plain") || msg.Header.Get("To") == "" {
				t.Errorf("headers %v", msg.Header)
			}
			body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"Berth: pushed tags latest, foo to ns/app", "Repository: ns/app <https://reg.example:5000/repository/ns/app>", `"updated_tags": [`} {
				if !strings.Contains(string(body), want) {
					t.Errorf("body lacks %q:\n%s", want, body)
				}
			}
		})
	}
}

func TestEmailFailures(t *testing.T) {
	sink := newSMTPSink(t, nil, true)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	tests := []struct {
		name       string
		m          Email
		wantStatus int
		wantErr    string
	}{
		{"wrong password", Email{SMTPAddr: sink.addr, From: "b@x.example", To: "o@x.example", Username: "berth", Password: "wrong-password-123"}, 535, "authentication failed"},
		{"recipient refused", Email{SMTPAddr: sink.addr, From: "b@x.example", To: "reject@x.example"}, 550, "no such user"},
		{"no server", Email{SMTPAddr: deadAddr, From: "b@x.example", To: "o@x.example", Password: "wrong-password-123"}, 0, "refused"},
		{"bad sender", Email{SMTPAddr: sink.addr, From: "not an address", To: "o@x.example"}, 0, "sender"},
		{"header injection", Email{SMTPAddr: sink.addr, From: "b@x.example", To: "o@x.example\r\nBcc: evil@x.example"}, 0, "recipient"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.m.Deliver(context.Background(), emailDelivery(t))
			if res.Err == nil || !strings.Contains(res.Err.Error(), tc.wantErr) {
				t.Fatalf("Err = %v, want one mentioning %q", res.Err, tc.wantErr)
			}
			if res.StatusCode != tc.wantStatus {
				t.Errorf("StatusCode %d, want %d", res.StatusCode, tc.wantStatus)
			}
			if strings.Contains(res.Err.Error()+res.ResponseSnippet, "wrong-password-123") {
				t.Errorf("result leaks the password: %v", res.Err)
			}
		})
	}
	select {
	case m := <-sink.mails:
		t.Errorf("a failed delivery still sent %+v", m)
	default:
	}
}

func TestEmailHonoursContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accepts and never greets
		c, err := ln.Accept()
		if err == nil {
			_, _ = bufio.NewReader(c).ReadString('\n')
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res := Email{SMTPAddr: ln.Addr().String(), From: "b@x.example", To: "o@x.example"}.Deliver(ctx, emailDelivery(t))
	if res.Err == nil || !strings.Contains(res.Err.Error(), "deadline") {
		t.Fatalf("Err = %v", res.Err)
	}
}

func TestEmailNonJSONBody(t *testing.T) {
	sink := newSMTPSink(t, nil, false)
	d := Delivery{EventUUID: "u-2", Kind: "repo_push", Body: []byte("line one\nline two"), ContentType: "text/plain"}
	if res := (Email{SMTPAddr: sink.addr, From: "b@x.example", To: "o@x.example"}).Deliver(context.Background(), d); res.Err != nil {
		t.Fatal(res.Err)
	}
	msg, err := mail.ReadMessage(strings.NewReader(sink.next(t).data))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if msg.Header.Get("Subject") != "Berth notification: repo_push" || strings.TrimRight(string(body), "\n") != "line one\nline two" {
		t.Errorf("subject %q body %q", msg.Header.Get("Subject"), body)
	}
}
