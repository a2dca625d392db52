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
	"io"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv/smtpsink"
)

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
			opts := smtpsink.Options{TLS: srv}
			if tc.auth {
				opts.Password = "right"
			}
			sink := smtpsink.New(t, opts)
			m := Email{SMTPAddr: sink.Addr, From: "Berth <berth@reg.example>", To: "ops@example.com, dev@example.com",
				Username: tc.user, Password: "right", TLS: clientTLS, Hostname: "reg.example"}
			d := emailDelivery(t)
			res := m.Deliver(context.Background(), d)
			if res.Err != nil {
				t.Fatalf("Deliver: %v", res.Err)
			}
			if res.StatusCode != 250 || res.Latency <= 0 {
				t.Errorf("result %+v", res)
			}
			got := sink.Next(t)
			if got.Helo != "reg.example" || got.From != "berth@reg.example" || got.TLS != tc.wantTLS || got.User != tc.wantUser ||
				strings.Join(got.Rcpt, " ") != "ops@example.com dev@example.com" {
				t.Errorf("sink saw %+v", got)
			}
			msg, err := mail.ReadMessage(strings.NewReader(got.Data))
			if err != nil {
				t.Fatalf("message: %v\n%s", err, got.Data)
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
	sink := smtpsink.New(t, smtpsink.Options{Password: "right"})
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	tests := []struct {
		name       string
		m          Email
		wantStatus int
		wantErr    string
	}{
		{"wrong password", Email{SMTPAddr: sink.Addr, From: "b@x.example", To: "o@x.example", Username: "berth", Password: "wrong-password-123"}, 535, "authentication failed"},
		{"recipient refused", Email{SMTPAddr: sink.Addr, From: "b@x.example", To: "reject@x.example"}, 550, "no such user"},
		{"no server", Email{SMTPAddr: deadAddr, From: "b@x.example", To: "o@x.example", Password: "wrong-password-123"}, 0, "refused"},
		{"bad sender", Email{SMTPAddr: sink.Addr, From: "not an address", To: "o@x.example"}, 0, "sender"},
		{"header injection", Email{SMTPAddr: sink.Addr, From: "b@x.example", To: "o@x.example\r\nBcc: evil@x.example"}, 0, "recipient"},
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
	sink.None(t)
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
	sink := smtpsink.New(t, smtpsink.Options{})
	d := Delivery{EventUUID: "u-2", Kind: "repo_push", Body: []byte("line one\nline two"), ContentType: "text/plain"}
	if res := (Email{SMTPAddr: sink.Addr, From: "b@x.example", To: "o@x.example"}).Deliver(context.Background(), d); res.Err != nil {
		t.Fatal(res.Err)
	}
	msg, err := mail.ReadMessage(strings.NewReader(sink.Next(t).Data))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if msg.Header.Get("Subject") != "Berth notification: repo_push" || strings.TrimRight(string(body), "\n") != "line one\nline two" {
		t.Errorf("subject %q body %q", msg.Header.Get("Subject"), body)
	}
}
