// Package webhook delivers a job's result to the client's callback URL:
// signed per the Standard Webhooks specification, over an HTTP client that
// refuses private, loopback, link-local and metadata addresses at dial time
// (so DNS rebinding cannot get around the check made at submission), with no
// proxy from the environment and no redirects followed.
package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"code.dny.dev/ssrf"
)

// Policy says which callback URLs are acceptable.
type Policy struct {
	// AllowHTTP admits plain http:// URLs (local development and tests);
	// otherwise only https:// is.
	AllowHTTP bool
	// Allow lists address ranges admitted although they are private or
	// loopback (e.g. 127.0.0.1/32 in tests).
	Allow []netip.Prefix
	// Resolver looks up host names; nil means net.DefaultResolver.
	Resolver *net.Resolver
}

// guardian is the dial-time check for p.
func (p Policy) guardian() *ssrf.Guardian {
	var v4, v6 []netip.Prefix
	for _, pr := range p.Allow {
		if pr.Addr().Is4() {
			v4 = append(v4, pr)
		} else {
			v6 = append(v6, pr)
		}
	}
	return ssrf.New(ssrf.WithAnyPort(), ssrf.WithAllowedV4Prefixes(v4...), ssrf.WithAllowedV6Prefixes(v6...))
}

// ErrURL is wrapped by every reason ValidateURL refuses a URL.
var ErrURL = errors.New("invalid callback URL")

// ValidateURL checks a callback URL at submission: well-formed, absolute,
// https (or http when allowed), no credentials, and every address its host
// resolves to is public or admitted by the allow-list. The same check runs
// again when each connection is dialled.
func (p Policy) ValidateURL(ctx context.Context, raw string) error {
	if len(raw) > 2048 {
		return fmt.Errorf("%w: longer than 2048 characters", ErrURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrURL, err)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && p.AllowHTTP:
	case u.Scheme == "http":
		return fmt.Errorf("%w: must use https", ErrURL)
	default:
		return fmt.Errorf("%w: scheme must be https, not %q", ErrURL, u.Scheme)
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
	addrs, err := p.resolve(ctx, host)
	if err != nil {
		return fmt.Errorf("%w: host %q does not resolve: %v", ErrURL, host, err)
	}
	g := p.guardian()
	for _, a := range addrs {
		if err := g.SafeAddr(a); err != nil {
			return fmt.Errorf("%w: host %q resolves to %s, which is not a public address", ErrURL, host, a)
		}
	}
	return nil
}

func (p Policy) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
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

// ParsePrefixes reads a comma-separated list of addresses or CIDR ranges
// ("127.0.0.1, 10.1.0.0/16").
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not an address or CIDR range", f)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or CIDR range", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
