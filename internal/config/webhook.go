package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Webhook configures the delivery of a job's result to the callback_url its
// submission named, when the job ends. The api checks callback URLs against
// the same policy that the worker enforces when it connects.
type Webhook struct {
	// Secret signs deliveries per Standard Webhooks ("whsec_<base64>", a key
	// of 24 to 64 bytes). Empty: webhooks are off and the api refuses a
	// callback_url. Never logged.
	Secret string `env:"WEBHOOK_SECRET"`
	// PreviousSecret, during a rotation, signs deliveries too, so that
	// receivers still holding it verify them. Never logged.
	PreviousSecret string `env:"WEBHOOK_SECRET_PREVIOUS"`
	// AllowHTTP admits plain http:// callback URLs (development and
	// tests); otherwise only https:// is.
	AllowHTTP bool `env:"WEBHOOK_ALLOW_HTTP" envDefault:"false"`
	// AllowCIDRs lists addresses or ranges admitted although they are
	// loopback, private or link-local, each on every port or, with a port,
	// on that one only: "127.0.0.1/32,10.1.0.0/16:8443,[fd00::/8]:8443"
	// (see ParseAllowList). The denied ports are never admitted.
	AllowCIDRs string `env:"WEBHOOK_ALLOW_CIDRS"`
	// DeniedPorts are the ports no callback may use, on any address: Redis's
	// (REDIS_URL), the api's and the worker's (API_ADDR, WORKER_ADDR), and
	// Redis's and Sentinel's usual ones (6379, 26379). Filled by LoadFrom;
	// Denied adds the usual ones in any case.
	DeniedPorts []uint16 `env:"-"`
	// AttemptTimeout bounds one delivery attempt, from connecting to the
	// answer. (Field names are unique in Config: parse errors name the
	// variable by the field's name.)
	AttemptTimeout time.Duration `env:"WEBHOOK_TIMEOUT" envDefault:"15s"`
	// Concurrency caps the deliveries one worker process makes at once.
	Concurrency int `env:"WEBHOOK_CONCURRENCY" envDefault:"8"`
}

// Enabled reports whether webhooks are configured (a secret is set).
func (w Webhook) Enabled() bool { return w.Secret != "" }

// alwaysDeniedPorts are Redis's and Redis Sentinel's usual ports: refused
// to callbacks whatever REDIS_URL says, as another Redis may listen there.
var alwaysDeniedPorts = []uint16{6379, 26379}

// AllowList is WEBHOOK_ALLOW_CIDRS read (ParseAllowList); LoadFrom
// validated it, so a loaded Config never reads as empty by mistake.
func (w Webhook) AllowList() []AllowEntry {
	allow, _ := ParseAllowList(w.AllowCIDRs)
	return allow
}

// Denied is the ports no callback may use: DeniedPorts and, even in a
// Webhook that LoadFrom did not fill, the always denied ones, sorted.
func (w Webhook) Denied() []uint16 {
	denied := append(slices.Clone(alwaysDeniedPorts), w.DeniedPorts...)
	slices.Sort(denied)
	return slices.Compact(denied)
}

// Bounds of a webhook secret's key, per the Standard Webhooks
// specification.
const (
	minWebhookKey = 24
	maxWebhookKey = 64
)

// checkWebhookSecret says what is wrong with a secret ("whsec_" and the
// standard base64 of its key, as Standard Webhooks reads it), without
// repeating it.
func checkWebhookSecret(secret string) error {
	b64, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return errors.New("webhook secret must have the form whsec_<base64>")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return errors.New("webhook secret is not valid base64 after whsec_")
	}
	if len(key) < minWebhookKey || len(key) > maxWebhookKey {
		return fmt.Errorf("the key after whsec_ must be %d to %d bytes (base64), got %d bytes", minWebhookKey, maxWebhookKey, len(key))
	}
	return nil
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
