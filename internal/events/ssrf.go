package events

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is wrapped by every refusal of the SSRF guard.
var ErrRefused = errors.New("address refused by the SSRF guard")

// RefusedError says which address of which host the guard refused, and why.
type RefusedError struct {
	Host   string
	Addr   netip.Addr
	Reason string // loopback, link-local, private, cgnat, multicast, unspecified, reserved
}

// allowedHostsHint ends every refusal: the setting that lifts it.
const allowedHostsHint = "to notifications.allowedHosts (keywords \"loopback\" and \"private\", or CIDRs, IPs and host names)"

// Error is the refusal as whoever asked for the target sees it (a
// tenant creating a webhook, a mirror or an import): the setting and an
// entry that would lift it, and, for a host name, never what the name
// resolves to (the registry's internal addresses are not the tenant's to
// map); Detail says it for operators.
func (e *RefusedError) Error() string {
	if e.Host != e.Addr.String() {
		return fmt.Sprintf("refusing to connect to %q: it resolves to a loopback, private, link-local or other internal address (SSRF guard); "+
			"to allow it, add %q "+allowedHostsHint, e.Host, e.Host)
	}
	return e.Detail()
}

// Detail is the refusal for the operator's log: the address a host name
// resolves to, its kind, and every entry that would allow it.
func (e *RefusedError) Detail() string {
	target := e.Addr.String()
	if e.Host != target {
		target = fmt.Sprintf("%q: it resolves to %s,", e.Host, e.Addr)
	} else {
		target += ":"
	}
	return fmt.Sprintf("refusing to connect to %s a %s address (SSRF guard); to allow it, add %s "+allowedHostsHint, target, e.Reason, e.allowEntry())
}

// allowEntry is what to add to notifications.allowedHosts to permit the
// refused connection: the keyword that covers the address if one does,
// else the address (and the host name, for a name).
func (e *RefusedError) allowEntry() string {
	a := e.Addr.WithZone("").Unmap()
	v4, embedded := embeddedIPv4(a)
	var entries []string
	for _, kw := range []string{"loopback", "private"} {
		for _, p := range keywordNets(kw) {
			if p.Contains(a) || embedded && p.Contains(v4) {
				entries = append(entries, strconv.Quote(kw))
				break
			}
		}
	}
	if len(entries) == 0 {
		entries = append(entries, strconv.Quote(e.Addr.WithZone("").Unmap().String()))
	}
	if e.Host != e.Addr.String() {
		entries = append(entries, strconv.Quote(e.Host))
	}
	return strings.Join(entries, " or ")
}

// Unwrap makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Unwrap() error { return ErrRefused }

// Resolver looks up a host's addresses; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// GuardOption configures a Guard.
type GuardOption func(*Guard)

// WithResolver replaces the system resolver (tests use a fixed table).
func WithResolver(r Resolver) GuardOption { return func(g *Guard) { g.resolver = r } }

// WithDialTimeout sets how long one connection attempt may take (10 s).
func WithDialTimeout(d time.Duration) GuardOption { return func(g *Guard) { g.dialTimeout = d } }

// Guard keeps outgoing requests away from the registry's own networks:
// it resolves the host itself, refuses loopback, link-local (the cloud
// metadata address among them), unspecified, multicast, private, CGNAT and
// reserved addresses, IPv4 forms embedded in IPv6 included, unless the
// allow-list permits them, and then connects to the very address it
// checked, so a second DNS answer cannot redirect the connection.
type Guard struct {
	allowNets     []netip.Prefix
	allowHosts    map[string]bool
	allowSuffixes []string
	special       []specialRange
	resolver      Resolver
	dialTimeout   time.Duration
}

type specialRange struct {
	prefix netip.Prefix
	reason string
}

// NewGuard builds a guard. Each allow entry is a CIDR ("10.0.0.0/8"), a
// single IP, a host name ("tekton.internal", or "*.svc.cluster.local" for
// every name under it), or one of the words "private" (RFC 1918 and
// fc00::/7) and "loopback" (127.0.0.0/8 and ::1).
func NewGuard(allow []string, opts ...GuardOption) (*Guard, error) {
	g := &Guard{allowHosts: map[string]bool{}, resolver: &net.Resolver{}, dialTimeout: 10 * time.Second}
	for _, o := range opts {
		o(g)
	}
	for _, raw := range allow {
		entry := strings.ToLower(strings.TrimSpace(raw))
		switch {
		case entry == "private", entry == "loopback":
			g.allowNets = append(g.allowNets, keywordNets(entry)...)
		case strings.Contains(entry, "/"):
			p, err := netip.ParsePrefix(entry)
			if err != nil {
				return nil, fmt.Errorf("allow entry %q: %w", raw, err)
			}
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			g.allowNets = append(g.allowNets, p.Masked())
		default:
			if a, err := netip.ParseAddr(entry); err == nil {
				a = a.WithZone("").Unmap()
				g.allowNets = append(g.allowNets, netip.PrefixFrom(a, a.BitLen()))
				continue
			}
			name, wildcard := strings.CutPrefix(strings.TrimSuffix(entry, "."), "*.")
			if !validHostname(name) {
				return nil, fmt.Errorf("allow entry %q: not a CIDR, IP, host name, \"private\" or \"loopback\"", raw)
			}
			if wildcard {
				g.allowSuffixes = append(g.allowSuffixes, "."+name)
			} else {
				g.allowHosts[name] = true
			}
		}
	}
	for _, s := range []struct{ cidr, reason string }{
		{"0.0.0.0/8", "unspecified"},
		{"100.64.0.0/10", "cgnat"},
		{"192.0.0.0/24", "reserved"},
		{"192.0.2.0/24", "reserved"},
		{"198.18.0.0/15", "reserved"},
		{"198.51.100.0/24", "reserved"},
		{"203.0.113.0/24", "reserved"},
		{"240.0.0.0/4", "reserved"}, // includes 255.255.255.255
		{"fec0::/10", "private"},    // deprecated site-local
		{"64:ff9b:1::/48", "reserved"},
		{"100::/64", "reserved"},
		{"2001:db8::/32", "reserved"},
	} {
		g.special = append(g.special, specialRange{netip.MustParsePrefix(s.cidr), s.reason})
	}
	return g, nil
}

// keywordNets are the ranges that an allow-list keyword permits.
func keywordNets(keyword string) []netip.Prefix {
	switch keyword {
	case "private":
		return mustPrefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
	case "loopback":
		return mustPrefixes("127.0.0.0/8", "::1/128")
	}
	return nil
}

func mustPrefixes(cidrs ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(cidrs))
	for i, c := range cidrs {
		out[i] = netip.MustParsePrefix(c)
	}
	return out
}

func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// classify names why an address is special, or "" for a public address.
func (g *Guard) classify(a netip.Addr) string {
	a = a.WithZone("").Unmap()
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsMulticast():
		return "multicast"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsPrivate():
		return "private"
	}
	for _, s := range g.special {
		if s.prefix.Contains(a) {
			return s.reason
		}
	}
	if v4, ok := embeddedIPv4(a); ok {
		return g.classify(v4)
	}
	return ""
}

// embeddedIPv4 is the IPv4 address carried by a NAT64 (64:ff9b::/96),
// 6to4 (2002::/16) or IPv4-compatible (::/96) IPv6 address.
func embeddedIPv4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	nat64 := [12]byte{0x00, 0x64, 0xff, 0x9b}
	switch {
	case [12]byte(b[:12]) == nat64, [12]byte(b[:12]) == [12]byte{}:
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case b[0] == 0x20 && b[1] == 0x02:
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

func (g *Guard) allowedAddr(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	for _, p := range g.allowNets {
		if p.Contains(a) {
			return true
		}
	}
	if v4, ok := embeddedIPv4(a); ok {
		return g.allowedAddr(v4)
	}
	return false
}

func (g *Guard) allowedHost(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if g.allowHosts[h] {
		return true
	}
	for _, s := range g.allowSuffixes {
		if strings.HasSuffix(h, s) {
			return true
		}
	}
	return false
}

// resolve returns the checked addresses of host: every one must pass, or
// the host is refused as a whole.
func (g *Guard) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return nil, errors.New("empty host")
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ipNet := "ip"
		switch network {
		case "tcp4":
			ipNet = "ip4"
		case "tcp6":
			ipNet = "ip6"
		}
		addrs, err = g.resolver.LookupNetIP(ctx, ipNet, host)
		if err != nil {
			return nil, fmt.Errorf("resolve %q: %w", host, withoutServer(err))
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("resolve %q: no addresses", host)
		}
	}
	if g.allowedHost(host) {
		return addrs, nil
	}
	for _, a := range addrs {
		if why := g.classify(a); why != "" && !g.allowedAddr(a) {
			return nil, &RefusedError{Host: host, Addr: a, Reason: why}
		}
	}
	return addrs, nil
}

// withoutServer is a lookup's error without the DNS server that answered
// ("lookup h on 10.96.0.10:53: no such host"): the error reaches whoever
// named the host (a notification's attempts, a mirror's last_error), and
// the registry's resolver is an internal address. Whether the name was
// not found, or the failure temporary, is kept (*net.DNSError).
func withoutServer(err error) error {
	var de *net.DNSError
	if !errors.As(err, &de) || de.Server == "" {
		return err
	}
	c := *de
	c.Server = ""
	return &c
}

// DialContext is an http.Transport's dialer: it resolves, checks, and
// connects to the checked address only.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("guard: network %q is not allowed", network)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return nil, fmt.Errorf("guard: invalid port %q", port)
	}
	addrs, err := g.resolve(ctx, network, host)
	if err != nil {
		return nil, err
	}
	// Second line of defence: the socket may only connect to an address
	// that was checked above.
	checked := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		checked[i] = a.WithZone("").Unmap()
	}
	d := net.Dialer{Timeout: g.dialTimeout, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !slices.Contains(checked, ap.Addr().WithZone("").Unmap()) {
			return fmt.Errorf("%w: unexpected connect to %s", ErrRefused, address)
		}
		return nil
	}}
	var errs []error
	for _, a := range addrs {
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// CheckURL validates a notification target when it is created: http or
// https, a host, no user:password, and a host that resolves to allowed
// addresses only. Errors name the host, never the path or query (which
// may carry a token, as Slack's hook URLs do).
func (g *Guard) CheckURL(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return errors.New("invalid URL")
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	default:
		return fmt.Errorf("URL scheme %q is not allowed (http, https)", u.Scheme)
	}
	if u.User != nil {
		return errors.New("URL must not carry credentials (user:password@); use a header or a secret")
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return errors.New("URL has no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return fmt.Errorf("URL port %q is invalid", p)
		}
	}
	_, err = g.resolve(ctx, "tcp", u.Hostname())
	return err
}
