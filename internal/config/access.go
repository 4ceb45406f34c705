package config

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Access configures who may use the api and how much of the shared
// capacity one caller may take: API keys, the default per-key quotas (a
// key's own limits override them), the caps on stored jobs and on SSE
// connections, and the HTTP server's timeouts.
type Access struct {
	// AuthRequired makes every /api request carry an API key
	// (Authorization: Bearer <key>). Empty means: required when ENV is
	// production, optional otherwise (requests without a key are the
	// anonymous caller, which is how make demo and local development run).
	// A production api refuses to start with it set to false.
	AuthRequired string `env:"AUTH_REQUIRED"`
	// EventsTokenSecret signs the token in a job's events link, which lets
	// a browser EventSource (which cannot send headers) open that one
	// job's stream. At least 32 characters; required when keys are. Empty
	// otherwise: each api process makes a random one (links then work
	// only on the replica that made them). Never logged.
	EventsTokenSecret string `env:"EVENTS_TOKEN_SECRET"`
	// EventsTokenTTL is how long an events link stays valid.
	EventsTokenTTL time.Duration `env:"EVENTS_TOKEN_TTL" envDefault:"1h"`

	// Default quotas per key (and for the anonymous caller); 0 means
	// unlimited. A key's own limits (ttctl keys) replace them.
	SubmissionsPerMinute int   `env:"QUOTA_SUBMISSIONS_PER_MINUTE" envDefault:"60"`
	RunningJobs          int   `env:"QUOTA_RUNNING_JOBS" envDefault:"16"`
	StoredJobs           int   `env:"QUOTA_STORED_JOBS" envDefault:"5000"`
	TokensPerDay         int64 `env:"QUOTA_TOKENS_PER_DAY" envDefault:"2000000"`
	SSEPerKey            int   `env:"QUOTA_SSE_CONNECTIONS" envDefault:"32"`

	// MaxStoredJobs caps the jobs kept in Redis across all keys; 0 means
	// unlimited. With JOB_RETENTION it bounds the memory jobs take.
	MaxStoredJobs int `env:"MAX_STORED_JOBS" envDefault:"200000"`
	// MaxSSEConnections caps the SSE streams one api process serves.
	MaxSSEConnections int `env:"MAX_SSE_CONNECTIONS" envDefault:"10000"`

	// MaxBacklogSeconds is the admission limit on the backlog of member
	// calls: a new job whose calls are expected to wait longer than this
	// for provider capacity (or longer than JOB_DEADLINE) is refused with
	// 503 and Retry-After. 0 turns the limit off.
	MaxBacklogSeconds int `env:"MAX_BACKLOG_SECONDS" envDefault:"0"`

	// CORSAllowedOrigins lists the origins ("https://app.example.com")
	// whose pages may call the api from a browser; empty: none (same-origin
	// pages and non-browser clients need none). "*" allows every origin.
	CORSAllowedOrigins []string `env:"CORS_ALLOWED_ORIGINS" envSeparator:","`

	// HTTP server timeouts: reading a request's headers, reading a whole
	// request (headers and body; SSE streams are exempt once they start),
	// and keeping an idle keep-alive connection.
	ReadHeaderTimeout time.Duration `env:"HTTP_READ_HEADER_TIMEOUT" envDefault:"10s"`
	ReadTimeout       time.Duration `env:"HTTP_READ_TIMEOUT" envDefault:"30s"`
	IdleTimeout       time.Duration `env:"HTTP_IDLE_TIMEOUT" envDefault:"120s"`
}

// KeysRequired reports whether every /api request must carry an API key.
func (c Config) KeysRequired() bool {
	if v, err := strconv.ParseBool(strings.TrimSpace(c.Access.AuthRequired)); err == nil {
		return v
	}
	return c.Production()
}

// maxBacklogSeconds bounds MAX_BACKLOG_SECONDS: a day, far beyond any job
// deadline, which the limit never exceeds anyway.
const maxBacklogSeconds = 86400

// MaxBacklog is the admission limit on the expected wait of a new job's
// member calls (MAX_BACKLOG_SECONDS); 0 when off.
func (a Access) MaxBacklog() time.Duration {
	return time.Duration(a.MaxBacklogSeconds) * time.Second
}

// minEventsSecret is the least length of EVENTS_TOKEN_SECRET.
const minEventsSecret = 32

func (c Config) validateAccess() []error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", name, fmt.Sprintf(format, args...)))
	}
	a := c.Access
	if v := strings.TrimSpace(a.AuthRequired); v != "" {
		if b, err := strconv.ParseBool(v); err != nil {
			bad("AUTH_REQUIRED", "must be true or false, got %q", a.AuthRequired)
		} else if !b && c.Production() {
			bad("AUTH_REQUIRED", "API keys cannot be turned off in production (ENV=%s): anyone reaching the api could use it", c.Env)
		}
	}
	if s := a.EventsTokenSecret; s != "" || c.KeysRequired() {
		switch {
		case len(s) < minEventsSecret:
			bad("EVENTS_TOKEN_SECRET", "must be at least %d characters when API keys are required (it signs events links), got %d", minEventsSecret, len(s))
		case strings.IndexFunc(s, unicode.IsSpace) >= 0:
			bad("EVENTS_TOKEN_SECRET", "must not contain white space")
		}
	}
	if a.EventsTokenTTL < time.Minute || a.EventsTokenTTL > 7*24*time.Hour {
		bad("EVENTS_TOKEN_TTL", "must be between 1m and 168h, got %s", a.EventsTokenTTL)
	}
	for name, v := range map[string]int64{
		"QUOTA_SUBMISSIONS_PER_MINUTE": int64(a.SubmissionsPerMinute), "QUOTA_RUNNING_JOBS": int64(a.RunningJobs),
		"QUOTA_STORED_JOBS": int64(a.StoredJobs), "QUOTA_TOKENS_PER_DAY": a.TokensPerDay,
		"QUOTA_SSE_CONNECTIONS": int64(a.SSEPerKey), "MAX_STORED_JOBS": int64(a.MaxStoredJobs),
		"MAX_SSE_CONNECTIONS": int64(a.MaxSSEConnections),
	} {
		if v < 0 {
			bad(name, "must not be negative (0 means unlimited), got %d", v)
		}
	}
	if a.MaxBacklogSeconds < 0 || a.MaxBacklogSeconds > maxBacklogSeconds {
		bad("MAX_BACKLOG_SECONDS", "must be between 0 (off) and %d, got %d", maxBacklogSeconds, a.MaxBacklogSeconds)
	}
	for name, d := range map[string]time.Duration{
		"HTTP_READ_HEADER_TIMEOUT": a.ReadHeaderTimeout, "HTTP_READ_TIMEOUT": a.ReadTimeout, "HTTP_IDLE_TIMEOUT": a.IdleTimeout,
	} {
		if d < time.Second || d > 10*time.Minute {
			bad(name, "must be between 1s and 10m, got %s", d)
		}
	}
	if a.ReadTimeout < a.ReadHeaderTimeout {
		bad("HTTP_READ_TIMEOUT", "must not be below HTTP_READ_HEADER_TIMEOUT (%s), got %s", a.ReadHeaderTimeout, a.ReadTimeout)
	}
	for _, o := range a.CORSAllowedOrigins {
		if err := checkOrigin(strings.TrimSpace(o)); err != nil {
			bad("CORS_ALLOWED_ORIGINS", "%q: %v", o, err)
		}
	}
	for _, m := range c.LLM.AllowedModelsList {
		if strings.TrimSpace(m) == "" {
			bad("LLM_ALLOWED_MODELS", "must not have empty entries")
			break
		}
	}
	return errs
}

// AllowedModels are the models a request may name: LLM_ALLOWED_MODELS
// when set, otherwise every configured model (LLM_MODEL, the narrative
// model, the models the providers list) and their fallbacks. Sorted, with
// the default model among them.
func (l LLM) AllowedModels() []string {
	seen := map[string]bool{}
	var out []string
	add := func(m string) {
		if m = strings.TrimSpace(m); m != "" && !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	if len(l.AllowedModelsList) > 0 {
		for _, m := range l.AllowedModelsList {
			add(m)
		}
		add(l.Model)
	} else {
		add(l.Model)
		add(l.NarrativeModel)
		for _, p := range l.Providers {
			for _, m := range p.Models {
				add(m)
			}
		}
	}
	for _, m := range slices.Clone(out) {
		for _, f := range l.Fallbacks[m] {
			add(f)
		}
	}
	slices.Sort(out)
	return out
}

// ModelAllowed reports whether a request may name model.
func (l LLM) ModelAllowed(model string) bool {
	return slices.Contains(l.AllowedModels(), model)
}

// checkOrigin says what keeps o from being a browser origin: a scheme and a
// host (and port), nothing else; or "*".
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("an origin is http:// or https://")
	case u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return errors.New("an origin is scheme://host[:port], without path, query or credentials")
	}
	return nil
}

// CORSOrigins are the allowed origins, trimmed, without a trailing slash.
func (a Access) CORSOrigins() []string {
	var out []string
	for _, o := range a.CORSAllowedOrigins {
		if o = strings.TrimSuffix(strings.TrimSpace(o), "/"); o != "" {
			out = append(out, o)
		}
	}
	return out
}
