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

	"github.com/timetravel-ai/timetravel/internal/config"
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
// (loopback, private, link-local), on one port or on every port. Its
// grammar is WEBHOOK_ALLOW_CIDRS's, which package config reads.
type AllowEntry = config.AllowEntry

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

// ParseAllowList reads a comma-separated allow-list (WEBHOOK_ALLOW_CIDRS);
// see config.ParseAllowList.
func ParseAllowList(s string) ([]AllowEntry, error) { return config.ParseAllowList(s) }

// PolicyOf is the Policy that w configures: http:// when allowed, the
// allow-list of WEBHOOK_ALLOW_CIDRS and the denied ports.
func PolicyOf(w config.Webhook) Policy {
	return Policy{AllowHTTP: w.AllowHTTP, AllowEntries: w.AllowList(), DeniedPorts: w.Denied()}
}

// SignerOf is the Signer of w's secret and, during a rotation, its
// previous one; nil when webhooks are off (no secret). Its errors never
// contain a secret.
func SignerOf(w config.Webhook) (*Signer, error) {
	if !w.Enabled() {
		return nil, nil
	}
	return NewSigner(w.Secret, w.PreviousSecret)
}
