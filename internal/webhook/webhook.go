// Package webhook delivers a job's result to the client's callback URL:
// signed per the Standard Webhooks specification, over an HTTP client that
// refuses private, loopback, link-local and metadata addresses and the
// denied ports (Redis's, the service's own) at dial time, so DNS rebinding
// cannot get around the check made at submission, with no proxy from the
// environment and no redirects followed. Its errors never name an address a
// host resolved to.
package webhook

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

	"code.dny.dev/ssrf"
)

// Policy says which callback URLs are acceptable, and which addresses a
// delivery may connect to.
type Policy struct {
	// AllowHTTP admits plain http:// URLs (local development and tests);
	// otherwise only https:// is.
	AllowHTTP bool
	// Allow lists address ranges admitted on any port (but DeniedPorts)
	// although they are private or loopback (e.g. 127.0.0.1/32 in tests).
	Allow []netip.Prefix
	// AllowEntries lists more such ranges, each on one port or on any (see
	// ParseAllowList).
	AllowEntries []AllowEntry
	// DeniedPorts are never connected to, whatever the address: not on an
	// allow-listed range, nor on a public address. The service's own ports
	// and Redis's go here, so that a callback cannot reach them.
	DeniedPorts []uint16
	// Resolver looks up host names; nil means net.DefaultResolver.
	Resolver *net.Resolver
}

// AllowEntry admits a range of addresses that are otherwise refused
// (loopback, private, link-local), on one port or on every port.
type AllowEntry struct {
	Prefix netip.Prefix
	// Port restricts the entry to one port; 0 means every port but the
	// denied ones.
	Port uint16
}

// String writes e as ParseAllowList reads it: "10.0.0.0/8",
// "10.0.0.0/8:8443", "[fd00::/8]:8443".
func (e AllowEntry) String() string {
	if e.Port == 0 {
		return e.Prefix.String()
	}
	if e.Prefix.Addr().Is6() {
		return "[" + e.Prefix.String() + "]:" + strconv.Itoa(int(e.Port))
	}
	return e.Prefix.String() + ":" + strconv.Itoa(int(e.Port))
}

// ErrURL is wrapped by every reason ValidateURL refuses a URL.
var ErrURL = errors.New("invalid callback URL")

// Why an address is refused. The words are the same at submission and at
// dial time and never name the address: a host name's addresses are the
// resolver's business, which a client must not learn through an error
// (say, that a name resolves to the cloud's metadata address).
var (
	errNotAllowed = errors.New("address not allowed")
	errPort       = fmt.Errorf("%w: port not allowed", errNotAllowed)
	errPrivate    = fmt.Errorf("%w: not a public address (private or local)", errNotAllowed)
	errHost       = fmt.Errorf("%w: not a public host (private, local or unresolvable)", errNotAllowed)
	errNetwork    = fmt.Errorf("%w: network not allowed", errNotAllowed)
)

// public tells public addresses from the others (loopback, private,
// link-local, multicast, metadata and the other special ranges).
var public = ssrf.New(ssrf.WithAnyPort())

// ValidateURL checks a callback URL at submission: well-formed, absolute,
// https (or http when allowed), no credentials, a port that is not denied,
// and every address its host resolves to public or admitted on that port by
// the allow-list. The same check runs again when each connection is
// dialled. Its errors wrap ErrURL and say why in general words ("address
// not allowed: port not allowed"), never naming an address the host
// resolved to.
func (p Policy) ValidateURL(ctx context.Context, raw string) error {
	if len(raw) > 2048 {
		return fmt.Errorf("%w: longer than 2048 characters", ErrURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: not a valid URL", ErrURL)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && p.AllowHTTP:
	case p.AllowHTTP:
		return fmt.Errorf("%w: scheme must be https or http", ErrURL)
	default:
		return fmt.Errorf("%w: scheme must be https", ErrURL)
	}
	if u.User != nil {
		return fmt.Errorf("%w: must not contain credentials", ErrURL)
	}
	host := u.Hostname()
	if host == "" || u.Opaque != "" {
		return fmt.Errorf("%w: has no host", ErrURL)
	}
	if u.Fragment != "" {
		return fmt.Errorf("%w: must not have a fragment", ErrURL)
	}
	port := uint16(443)
	if u.Scheme == "http" {
		port = 80
	}
	if s := u.Port(); s != "" {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("%w: invalid port", ErrURL)
		}
		port = uint16(n)
	}
	if slices.Contains(p.DeniedPorts, port) {
		return fmt.Errorf("%w: %w", ErrURL, errPort)
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if err := p.check(a.Unmap(), port); err != nil {
			return fmt.Errorf("%w: %w", ErrURL, err)
		}
		return nil
	}
	// A name: whether it does not resolve or resolves to an address that
	// is refused, the answer is the same, so that it says nothing of what
	// the resolver knows.
	addrs, err := p.resolve(ctx, host)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrURL, errHost)
	}
	for _, a := range addrs {
		if p.check(a, port) != nil {
			return fmt.Errorf("%w: %w", ErrURL, errHost)
		}
	}
	return nil
}

// check tells whether a connection to a on port is allowed: a port that is
// not denied, and an address that an allow-list entry admits on that port
// or that is public. The error is one of the err* reasons.
func (p Policy) check(a netip.Addr, port uint16) error {
	if slices.Contains(p.DeniedPorts, port) {
		return errPort
	}
	inRange := false
	for _, pr := range p.Allow {
		if pr.Contains(a) {
			return nil
		}
	}
	for _, e := range p.AllowEntries {
		if e.Prefix.Contains(a) {
			if e.Port == 0 || e.Port == port {
				return nil
			}
			inRange = true
		}
	}
	if public.SafeAddr(a) == nil {
		return nil
	}
	if inRange {
		return errPort
	}
	return errPrivate
}

// control is the dialer's check of every connection (net.Dialer.Control):
// after DNS, so that a name that resolved to a public address at submission
// and to another since (DNS rebinding) is refused all the same.
func (p Policy) control(network, address string, _ syscall.RawConn) error {
	if network != "tcp4" && network != "tcp6" {
		return errNetwork
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return errPrivate
	}
	return p.check(ap.Addr().Unmap(), ap.Port())
}

func (p Policy) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	r := p.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, errors.New("no addresses")
	}
	out := make([]netip.Addr, len(ips))
	for i, ip := range ips {
		out[i] = ip.Unmap()
	}
	return out, nil
}

// ParseAllowList reads a comma-separated allow-list (WEBHOOK_ALLOW_CIDRS):
// addresses or CIDR ranges, each with an optional port that restricts it to
// that port: "127.0.0.1", "10.1.0.0/16", "10.1.0.0/16:8443",
// "127.0.0.1:9000", "::1", "fd00::/8", "[fd00::/8]:8443", "[::1]:9000". An
// IPv6 entry with a port needs the brackets. An IPv4-mapped IPv6 entry is
// read as its IPv4 range.
func ParseAllowList(s string) ([]AllowEntry, error) {
	var out []AllowEntry
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		e, err := parseAllowEntry(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or CIDR range with an optional port (\"10.0.0.0/8\", \"10.0.0.0/8:8443\", \"[fd00::/8]:8443\"): %w", f, err)
		}
		out = append(out, e)
	}
	return out, nil
}

func parseAllowEntry(f string) (AllowEntry, error) {
	var e AllowEntry
	rng, port := f, ""
	switch {
	case strings.HasPrefix(f, "["):
		end := strings.Index(f, "]")
		if end < 0 {
			return e, errors.New("no closing bracket")
		}
		rng, port = f[1:end], f[end+1:]
		if port != "" {
			var ok bool
			if port, ok = strings.CutPrefix(port, ":"); !ok {
				return e, errors.New("want a port after the closing bracket")
			}
		}
	case strings.Count(f, ":") == 1:
		rng, port, _ = strings.Cut(f, ":")
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return e, errors.New("the port must be from 1 to 65535")
		}
		e.Port = uint16(n)
	}
	if strings.Contains(rng, "/") {
		pr, err := netip.ParsePrefix(rng)
		if err != nil {
			return e, errors.New("bad CIDR range")
		}
		e.Prefix = pr.Masked()
	} else {
		a, err := netip.ParseAddr(rng)
		if err != nil || a.Zone() != "" {
			return e, errors.New("bad address")
		}
		e.Prefix = netip.PrefixFrom(a, a.BitLen())
	}
	if a := e.Prefix.Addr(); a.Is4In6() {
		if e.Prefix.Bits() < 96 {
			return e, errors.New("an IPv4-mapped range must be /96 or longer")
		}
		e.Prefix = netip.PrefixFrom(a.Unmap(), e.Prefix.Bits()-96)
	}
	return e, nil
}
