package events

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeResolver answers from a table and counts lookups.
type fakeResolver struct {
	table map[string][]string
	mu    sync.Mutex
	calls map[string]int
}

func newFakeResolver(table map[string][]string) *fakeResolver {
	return &fakeResolver{table: table, calls: map[string]int{}}
}

func (f *fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	f.calls[host]++
	f.mu.Unlock()
	var out []netip.Addr
	for _, s := range f.table[strings.ToLower(host)] {
		a := netip.MustParseAddr(s)
		if network == "ip4" && !a.Unmap().Is4() || network == "ip6" && a.Unmap().Is4() {
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

func (f *fakeResolver) count(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[host]
}

func mustGuard(t *testing.T, allow []string, r Resolver) *Guard {
	t.Helper()
	opts := []GuardOption{}
	if r != nil {
		opts = append(opts, WithResolver(r))
	}
	g, err := NewGuard(allow, opts...)
	if err != nil {
		t.Fatalf("NewGuard(%v): %v", allow, err)
	}
	return g
}

func TestGuardAddresses(t *testing.T) {
	refusedByDefault := map[string]string{
		"127.0.0.1":              "loopback",
		"127.1.2.3":              "loopback",
		"::1":                    "loopback",
		"0.0.0.0":                "unspecified",
		"0.1.2.3":                "unspecified",
		"::":                     "unspecified",
		"169.254.169.254":        "link-local",
		"fe80::1":                "link-local",
		"10.1.2.3":               "private",
		"172.16.0.1":             "private",
		"172.31.255.255":         "private",
		"192.168.1.1":            "private",
		"fc00::1":                "private",
		"fd12:3456::1":           "private",
		"100.64.0.1":             "cgnat",
		"100.127.255.255":        "cgnat",
		"224.0.0.1":              "multicast",
		"ff02::1":                "multicast",
		"ff0e::1":                "multicast",
		"239.1.2.3":              "multicast",
		"255.255.255.255":        "reserved",
		"240.0.0.1":              "reserved",
		"::ffff:127.0.0.1":       "loopback",
		"::ffff:169.254.169.254": "link-local",
		"::ffff:10.0.0.1":        "private",
		"64:ff9b::a9fe:a9fe":     "link-local", // NAT64 form of 169.254.169.254
		"2002:7f00:1::1":         "loopback",   // 6to4 form of 127.0.0.1
		"::7f00:1":               "loopback",   // IPv4-compatible form of 127.0.0.1
	}
	public := []string{"93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"}

	tests := []struct {
		name    string
		allow   []string
		allowed []string
		refused []string
	}{
		{name: "default", allowed: public},
		{name: "private", allow: []string{"private"},
			allowed: []string{"10.1.2.3", "172.16.0.1", "192.168.1.1", "fd12:3456::1", "::ffff:10.0.0.1"},
			refused: []string{"127.0.0.1", "169.254.169.254", "100.64.0.1"}},
		{name: "loopback", allow: []string{"loopback"},
			allowed: []string{"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "2002:7f00:1::1"},
			refused: []string{"10.1.2.3", "169.254.169.254"}},
		{name: "single IP", allow: []string{"169.254.169.254"},
			allowed: []string{"169.254.169.254", "::ffff:169.254.169.254"},
			refused: []string{"169.254.0.1", "127.0.0.1"}},
		{name: "CIDR", allow: []string{"10.0.0.0/8", "127.0.0.1/32", "fd00::/8"},
			allowed: []string{"10.255.0.1", "127.0.0.1", "fd12:3456::1"},
			refused: []string{"127.0.0.2", "192.168.1.1", "fc00::1"}},
		{name: "mapped CIDR", allow: []string{"::ffff:100.64.0.0/106"},
			allowed: []string{"100.64.0.1", "::ffff:100.100.0.1"},
			refused: []string{"10.0.0.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := mustGuard(t, tc.allow, newFakeResolver(nil))
			refused := tc.refused
			if tc.allow == nil {
				for a := range refusedByDefault {
					refused = append(refused, a)
				}
			}
			ctx := context.Background()
			for _, a := range tc.allowed {
				if err := g.CheckURL(ctx, "http://"+net.JoinHostPort(a, "8080")+"/hook"); err != nil {
					t.Errorf("%s refused: %v", a, err)
				}
			}
			for _, a := range refused {
				err := g.CheckURL(ctx, "https://"+net.JoinHostPort(a, "443")+"/")
				var re *RefusedError
				if !errors.As(err, &re) || !errors.Is(err, ErrRefused) {
					t.Errorf("%s not refused: %v", a, err)
					continue
				}
				if want, ok := refusedByDefault[a]; ok && re.Reason != want {
					t.Errorf("%s refused as %q, want %q", a, re.Reason, want)
				}
			}
		})
	}
}

func TestGuardHostNames(t *testing.T) {
	r := newFakeResolver(map[string][]string{
		"tekton.internal":         {"10.0.0.5"},
		"other.internal":          {"10.0.0.6"},
		"el.ci.svc.cluster.local": {"10.96.0.10"},
		"svc.cluster.local":       {"10.96.0.11"},
		"public.example":          {"93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"},
		"mixed.example":           {"93.184.216.34", "10.0.0.1"},
		"metadata.example":        {"169.254.169.254"},
	})
	g := mustGuard(t, []string{"Tekton.Internal.", "*.svc.cluster.local"}, r)
	ctx := context.Background()
	for host, wantOK := range map[string]bool{
		"tekton.internal":         true,
		"TEKTON.internal":         true,
		"other.internal":          false,
		"el.ci.svc.cluster.local": true,
		"svc.cluster.local":       false, // the wildcard covers names under it only
		"public.example":          true,
		"mixed.example":           false, // one bad address refuses the host
		"metadata.example":        false,
	} {
		err := g.CheckURL(ctx, "http://"+host+"/x")
		if wantOK && err != nil {
			t.Errorf("%s refused: %v", host, err)
		}
		if !wantOK && !errors.Is(err, ErrRefused) {
			t.Errorf("%s not refused: %v", host, err)
		}
	}
	if err := g.CheckURL(ctx, "http://unknown.example/"); err == nil || errors.Is(err, ErrRefused) {
		t.Errorf("unresolvable host: %v", err)
	}
}

func TestCheckURL(t *testing.T) {
	g := mustGuard(t, nil, newFakeResolver(map[string][]string{"hooks.example": {"93.184.216.34"}}))
	tests := []struct {
		url, wantMsg string
	}{
		{"https://hooks.example/services/T/B/secret", ""},
		{"http://hooks.example:8080/x?y=1", ""},
		{"ftp://hooks.example/", "scheme"},
		{"file:///etc/passwd", "scheme"},
		{"gopher://hooks.example/", "scheme"},
		{"hooks.example/x", "scheme"},
		{"https://user:pass@hooks.example/", "credentials"},
		{"https://user@hooks.example/", "credentials"},
		{"https:///path", "no host"},
		{"https://hooks.example:0/", "port"},
		{"https://hooks.example:99999/", "port"},
		{"http://169.254.169.254/latest/meta-data/", "link-local"},
		{"http://[::ffff:169.254.169.254]/", "link-local"},
		{"http://localhost/", "no such host"}, // the fake resolver knows no localhost
		{"::not a url", "invalid URL"},
	}
	for _, tc := range tests {
		err := g.CheckURL(context.Background(), tc.url)
		if tc.wantMsg == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.url, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.url, err, tc.wantMsg)
		}
	}
	if err := g.CheckURL(context.Background(), "https://hooks.example/services/T/B/s3cr3tpath"); err != nil {
		t.Fatal(err)
	}
	err := g.CheckURL(context.Background(), "https://169.254.169.254/services/s3cr3tpath?token=s3cr3tquery")
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error %v must not repeat the path or query", err)
	}
}

func TestNewGuardRefusesBadEntries(t *testing.T) {
	for _, entry := range []string{"10.0.0.0/33", "not a host", "-bad.example", "http://x", "", "a..b", "*."} {
		if _, err := NewGuard([]string{entry}); err == nil {
			t.Errorf("NewGuard accepted %q", entry)
		}
	}
}

// listen starts a loopback TCP listener that counts the connections it accepts.
func listen(t *testing.T) (addr string, accepted *atomic.Int32, got chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int32)
	got = make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
			got <- struct{}{}
		}
	}()
	return ln.Addr().String(), accepted, got
}

func TestGuardDialContext(t *testing.T) {
	addr, accepted, got := listen(t)
	_, port, _ := net.SplitHostPort(addr)
	r := newFakeResolver(map[string][]string{"hook.test": {"127.0.0.1"}})
	ctx := context.Background()
	tests := []struct {
		name   string
		allow  []string
		target string
		wantOK bool
	}{
		{"literal refused by default", nil, addr, false},
		{"name refused by default", nil, "hook.test:" + port, false},
		{"mapped literal refused by default", nil, "[::ffff:127.0.0.1]:" + port, false},
		{"loopback word", []string{"loopback"}, addr, true},
		{"loopback word by name", []string{"loopback"}, "hook.test:" + port, true},
		{"single-address CIDR", []string{"127.0.0.1/32"}, "hook.test:" + port, true},
		{"other CIDR", []string{"127.0.0.2/32"}, addr, false},
		{"host name", []string{"hook.test"}, "hook.test:" + port, true},
		{"host name does not cover the literal", []string{"hook.test"}, addr, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := accepted.Load()
			g := mustGuard(t, tc.allow, r)
			conn, err := g.DialContext(ctx, "tcp", tc.target)
			if !tc.wantOK {
				if !errors.Is(err, ErrRefused) {
					t.Fatalf("dial %s: %v, want a refusal", tc.target, err)
				}
				// Prove nothing connected: a permitted dial is the next
				// (and only) connection the listener sees.
				ok := mustGuard(t, []string{"loopback"}, r)
				c, err := ok.DialContext(ctx, "tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				<-got
				if n := accepted.Load() - before; n != 1 {
					t.Fatalf("listener accepted %d connections, want only the permitted one", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial %s: %v", tc.target, err)
			}
			conn.Close()
			<-got
		})
	}
	g := mustGuard(t, []string{"loopback"}, r)
	if _, err := g.DialContext(ctx, "udp", addr); err == nil {
		t.Error("udp dial allowed")
	}
	if _, err := g.DialContext(ctx, "tcp", "hook.test"); err == nil {
		t.Error("dial without port allowed")
	}
}

func TestGuardResolvesOncePerDial(t *testing.T) {
	addr, _, got := listen(t)
	_, port, _ := net.SplitHostPort(addr)
	r := newFakeResolver(map[string][]string{"rebind.test": {"127.0.0.1"}})
	g := mustGuard(t, []string{"127.0.0.1/32"}, r)
	c, err := g.DialContext(context.Background(), "tcp", "rebind.test:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-got
	if n := r.count("rebind.test"); n != 1 {
		t.Errorf("resolved %d times, want once (the checked address is the one dialled)", n)
	}
	if ra := c.RemoteAddr().(*net.TCPAddr); !ra.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("connected to %v", ra)
	}
}

func TestGuardDialHonoursContext(t *testing.T) {
	g := mustGuard(t, []string{"loopback"}, newFakeResolver(nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	addr, _, _ := listen(t)
	if _, err := g.DialContext(ctx, "tcp", addr); err == nil {
		t.Fatal("dial with a cancelled context succeeded")
	}
}
