// Package config reads the service's configuration from environment
// variables into one typed struct with defaults, and validates it once at
// start. Every error names the variable at fault. It only parses: the
// objects the configuration describes (Redis clients, the webhook policy
// and signer, the gateway) are built by each process's composition root
// (cmd/api, cmd/worker) and the packages they belong to.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caarlos0/env/v11"
)

// Config is the configuration of the api and worker processes. Each process
// reads the whole struct and uses its own part.
type Config struct {
	// Redis is where queues, jobs and event streams live: a single server
	// (REDIS_URL), Sentinel or Cluster (see Redis).
	Redis Redis
	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"LOG_LEVEL" envDefault:"info"`

	// APIAddr is the api's listen address.
	APIAddr string `env:"API_ADDR" envDefault:":8080"`
	// JobDeadline bounds a job: when it passes, the job ends partial with the
	// snapshots that finished, or failed when none did.
	JobDeadline time.Duration `env:"JOB_DEADLINE" envDefault:"120s"`
	// JobRetention is how long a finished job, its result and its event
	// stream are kept.
	JobRetention time.Duration `env:"JOB_RETENTION" envDefault:"24h"`
	// SSEHeartbeat is the interval of SSE comment heartbeats.
	SSEHeartbeat time.Duration `env:"SSE_HEARTBEAT" envDefault:"15s"`

	// WorkerAddr is the worker's listen address for health checks.
	WorkerAddr string `env:"WORKER_ADDR" envDefault:":9090"`
	// SnapshotConcurrency caps the snapshot tasks one worker process runs at once.
	SnapshotConcurrency int `env:"SNAPSHOT_CONCURRENCY" envDefault:"32"`
	// AggregateConcurrency caps the aggregation tasks one worker runs at once.
	AggregateConcurrency int `env:"AGGREGATE_CONCURRENCY" envDefault:"16"`
	// TaskCheckInterval is how often an idle queue server polls Redis. Each
	// hop of a job waits up to 1.5x this; lower costs more Redis calls when
	// idle (about 1/interval scripts per second per queue and process).
	TaskCheckInterval time.Duration `env:"TASK_CHECK_INTERVAL" envDefault:"10ms"`
	// QueueIdleWait is how long a worker's idle queue server waits for the
	// announcement of a new task before it polls Redis again (package
	// wakeup); 0 turns the waits off (plain polling every
	// TaskCheckInterval). Announcements make the pickup immediate; this
	// only bounds the wait when one is lost.
	QueueIdleWait time.Duration `env:"QUEUE_IDLE_WAIT" envDefault:"2s"`
	// StreamFlushInterval and StreamFlushBytes gather streamed text into
	// events: an answer's first piece goes out at once, later ones when the
	// interval has passed or the bytes are waiting. Each batch costs one
	// Redis script and one SSE frame per client; 0 sends every piece.
	StreamFlushInterval time.Duration `env:"STREAM_FLUSH_INTERVAL" envDefault:"50ms"`
	StreamFlushBytes    int           `env:"STREAM_FLUSH_BYTES" envDefault:"1024"`
	// ShutdownTimeout is how long a stopping worker lets running tasks finish
	// before handing them back to the queue.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"25s"`
	// SnapshotMaxRetry is how many times a failed snapshot is retried.
	SnapshotMaxRetry int `env:"SNAPSHOT_MAX_RETRY" envDefault:"3"`

	// LLM is the provider configuration.
	LLM LLM

	// Webhook configures the callbacks to a job's callback_url.
	Webhook Webhook

	// Env names the deployment: "production" (or "prod") makes the api
	// refuse to start with the admin UI enabled and no credentials.
	Env string `env:"ENV" envDefault:"development"`

	// Admin configures the queue admin UI (asynqmon) of the api.
	Admin Admin

	// Alerts are the thresholds of GET /api/monitoring/alerts.
	Alerts Alerts

	// Cache configures the answer caches, deduplication, idempotency keys
	// and cache warming.
	Cache Cache

	// Access configures API keys, quotas and the bounds of shared
	// resources (see access.go).
	Access Access

	// CloudWatch configures the push of metrics to Amazon CloudWatch (see cloudwatch.go).
	CloudWatch CloudWatch
}

// Admin configures the asynqmon UI the api serves at /admin/queues. It is
// mounted only with credentials: basic auth (User and Password) or a bearer
// token (Token), or both.
type Admin struct {
	// Enabled turns the UI on (when credentials are set).
	Enabled bool `env:"ADMIN_UI_ENABLED" envDefault:"true"`
	// User and Password are the basic-auth credentials. Never logged.
	User     string `env:"ADMIN_USER"`
	Password string `env:"ADMIN_PASSWORD"`
	// Token is a bearer token (Authorization: Bearer <token>). Never logged.
	Token string `env:"ADMIN_TOKEN"`
	// ReadWrite lets the UI change tasks and queues (delete, run, pause);
	// otherwise it is read-only.
	ReadWrite bool `env:"ADMIN_READ_WRITE" envDefault:"false"`
}

// HasCredentials reports whether basic auth or a token is configured.
func (a Admin) HasCredentials() bool {
	return (a.User != "" && a.Password != "") || a.Token != ""
}

// Mounted reports whether the api serves the UI.
func (a Admin) Mounted() bool { return a.Enabled && a.HasCredentials() }

// Alerts are p95 thresholds over Window of the jobs that ended; zero turns
// an alert off.
type Alerts struct {
	Window             time.Duration `env:"ALERT_WINDOW" envDefault:"15m"`
	TotalP95Warning    time.Duration `env:"ALERT_TOTAL_P95_WARNING" envDefault:"45s"`
	TotalP95Critical   time.Duration `env:"ALERT_TOTAL_P95_CRITICAL" envDefault:"90s"`
	SnapshotP95Warning time.Duration `env:"ALERT_SNAPSHOT_P95_WARNING" envDefault:"30s"`
	// NotifyURL, when set, receives each start and end of an alert, once
	// across the api replicas (package alertnotify), signed with
	// WEBHOOK_SECRET and under the webhooks' address rules; NotifyFormat
	// is slack or alertmanager; NotifyInterval is how often each replica
	// looks at the alerts.
	NotifyURL      string        `env:"ALERT_NOTIFY_URL"`
	NotifyFormat   string        `env:"ALERT_NOTIFY_FORMAT" envDefault:"slack"`
	NotifyInterval time.Duration `env:"ALERT_NOTIFY_INTERVAL" envDefault:"15s"`
}

// Production reports whether Env names a production deployment.
func (c Config) Production() bool {
	e := strings.ToLower(strings.TrimSpace(c.Env))
	return e == "production" || e == "prod"
}

// Least lengths of the admin credentials in production, in characters.
const (
	minAdminToken    = 32
	minAdminPassword = 16
)

// ValidateAPI reports the settings the api cannot start with, in
// production: the admin UI enabled without credentials, and any admin
// credential that is set but weak (a token under 32 characters, a password
// under 16, or one of ADMIN_USER, ADMIN_PASSWORD and ADMIN_TOKEN with white
// space in it), whether the UI is enabled or not. The errors never repeat a
// credential.
func (c Config) ValidateAPI() error {
	a := c.Admin
	if !c.Production() {
		return nil
	}
	var errs []error
	if a.Enabled && !a.HasCredentials() {
		errs = append(errs, errors.New("config: ADMIN_UI_ENABLED: the queue admin UI is enabled in production (ENV) without credentials: set ADMIN_USER and ADMIN_PASSWORD or ADMIN_TOKEN, or set ADMIN_UI_ENABLED=false"))
	}
	for _, cred := range []struct {
		name, value string
		least       int
	}{{"ADMIN_USER", a.User, 0}, {"ADMIN_PASSWORD", a.Password, minAdminPassword}, {"ADMIN_TOKEN", a.Token, minAdminToken}} {
		if cred.value == "" {
			continue
		}
		if n := utf8.RuneCountInString(cred.value); n < cred.least {
			errs = append(errs, fmt.Errorf("config: %s: must be at least %d characters in production (ENV), got %d", cred.name, cred.least, n))
		}
		if strings.IndexFunc(cred.value, unicode.IsSpace) >= 0 {
			errs = append(errs, fmt.Errorf("config: %s: must not contain white space in production (ENV)", cred.name))
		}
	}
	// A password without a user is refused anywhere (Validate).
	return errors.Join(errs...)
}

// servicePorts returns the ports of Redis (REDIS_URL, or the sentinels'
// and the cluster seeds') and of the api and the worker (API_ADDR,
// WORKER_ADDR) that can be read, and the always denied ones: the ports no
// callback may use.
func (c Config) servicePorts() []uint16 {
	ports := slices.Clone(alwaysDeniedPorts)
	addrs := append([]string{c.APIAddr, c.WorkerAddr}, c.Redis.Addrs()...)
	for _, a := range addrs {
		if _, p, err := net.SplitHostPort(a); err == nil {
			if n, err := strconv.ParseUint(p, 10, 16); err == nil && n > 0 {
				ports = append(ports, uint16(n))
			}
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// LLM configures the OpenAI-compatible provider.
type LLM struct {
	// BaseURL is the provider's API root, e.g. https://api.openai.com/v1,
	// http://localhost:11434/v1 for Ollama.
	BaseURL string `env:"OPENAI_BASE_URL" envDefault:"https://api.openai.com/v1"`
	// APIKey authenticates with the provider. Never logged.
	APIKey string `env:"OPENAI_API_KEY"`
	// APIType is "openai" (any OpenAI-compatible endpoint) or "azure".
	APIType string `env:"OPENAI_API_TYPE" envDefault:"openai"`
	// APIVersion is the Azure API version (azure only).
	APIVersion string `env:"OPENAI_API_VERSION" envDefault:"2024-06-01"`
	// Model answers the snapshots unless a request names another.
	Model string `env:"LLM_MODEL" envDefault:"gpt-4o"`
	// ExtractionModel makes the key-changes extraction; a fast model suits.
	ExtractionModel string `env:"LLM_EXTRACTION_MODEL" envDefault:"gpt-4o-mini"`
	// NarrativeModel writes the narrative; empty means the job's model.
	NarrativeModel string `env:"LLM_NARRATIVE_MODEL"`
	// AllowedModelsList, when set, lists the models a request may name
	// (comma-separated); otherwise every configured model may be named
	// (see AllowedModels).
	AllowedModelsList []string `env:"LLM_ALLOWED_MODELS" envSeparator:","`
	// Timeout bounds one request to the provider, from sending it to the
	// last token.
	Timeout time.Duration `env:"LLM_TIMEOUT" envDefault:"90s"`
	// FirstTokenTimeout bounds the wait for the first token of a streamed
	// answer; zero means only Timeout applies.
	FirstTokenTimeout time.Duration `env:"LLM_FIRST_TOKEN_TIMEOUT" envDefault:"30s"`

	// MaxInFlight caps the requests in flight at the default provider,
	// across all worker processes; RPM and TPM limit its requests and
	// tokens per minute (0: unlimited). Providers of LLM_PROVIDERS have
	// their own, with MaxInFlight as the default cap.
	MaxInFlight int `env:"LLM_MAX_IN_FLIGHT" envDefault:"64"`
	RPM         int `env:"LLM_RPM" envDefault:"0"`
	TPM         int `env:"LLM_TPM" envDefault:"0"`
	// ProvidersJSON declares several providers as a JSON array (see
	// Provider). Empty: one provider from the OPENAI_* variables.
	ProvidersJSON string `env:"LLM_PROVIDERS"`
	// FallbacksSpec lists, per model, the models to use when it is out of
	// service: "gpt-4o=gpt-4o-mini|gpt-3.5-turbo,sim-a=sim-b".
	FallbacksSpec string `env:"LLM_FALLBACKS"`
	// MaxAttempts bounds the requests one call sends to one model within a
	// task run (its fallbacks get as many each).
	MaxAttempts int `env:"LLM_MAX_ATTEMPTS" envDefault:"4"`
	// RetryMaxWait is the longest wait between two attempts inside a task;
	// a provider asking for a longer one (Retry-After) gets the work handed
	// back to the queue with that delay instead.
	RetryMaxWait time.Duration `env:"LLM_RETRY_MAX_WAIT" envDefault:"5s"`
	// CapacityWait bounds how long a task waits for provider capacity (the
	// in-flight cap, RPM, TPM) while the provider's line does not move (no
	// slot freed, nobody ahead served) before it goes back to the queue,
	// without using up a retry. A task behind a line that moves keeps its
	// place until its deadline.
	CapacityWait time.Duration `env:"LLM_CAPACITY_WAIT" envDefault:"2s"`
	// AggregationReserve is the share of each provider's in-flight cap
	// that only aggregation calls may use (they go first in the line
	// anyway); 0 reserves none.
	AggregationReserve float64 `env:"LLM_AGGREGATION_RESERVE" envDefault:"0"`
	// A model's breaker at its provider opens when, within
	// BreakerWindow, at least BreakerFailures requests failed (429, 5xx,
	// timeouts, broken streams) and they are at least BreakerFailureRatio
	// of the window's requests; it stays open BreakerOpenFor. Shared by
	// every worker.
	BreakerFailures     int           `env:"LLM_BREAKER_FAILURES" envDefault:"20"`
	BreakerFailureRatio float64       `env:"LLM_BREAKER_FAILURE_RATIO" envDefault:"0.5"`
	BreakerWindow       time.Duration `env:"LLM_BREAKER_WINDOW" envDefault:"30s"`
	BreakerOpenFor      time.Duration `env:"LLM_BREAKER_OPEN_FOR" envDefault:"30s"`
	// BreakerMinRequests is the least number of requests in the window
	// before the failure ratio may open the breaker (the same population:
	// requests admitted in the window, failures among them); 0 means
	// BreakerFailures.
	BreakerMinRequests int `env:"LLM_BREAKER_MIN_REQUESTS" envDefault:"0"`
	// BreakerRamp is how long, after a breaker closes again, admissions
	// rise gradually from a tenth to all, so that the work that waited
	// does not hit the provider at once. 0 turns the ramp off.
	BreakerRamp time.Duration `env:"LLM_BREAKER_RAMP" envDefault:"10s"`
	// BreakerTrials is how many trial requests a half-open breaker lets
	// through at a time: more than one, so that a trial that hangs (until
	// the first-token timeout) does not hold the breaker half-open with
	// nothing else tried.
	BreakerTrials int `env:"LLM_BREAKER_TRIALS" envDefault:"3"`

	// Providers is the resolved provider list: from LLM_PROVIDERS, or the
	// one default provider. Filled by LoadFrom; API keys are read from the
	// variables the providers name.
	Providers []Provider `env:"-"`
	// Fallbacks maps a model to its ordered fallbacks. Filled by LoadFrom.
	Fallbacks map[string][]string `env:"-"`
}

// Provider is one OpenAI-compatible endpoint and its limits. Its JSON form
// is an element of LLM_PROVIDERS:
//
//	{"name": "openai", "base_url": "https://api.openai.com/v1",
//	 "api_key_env": "OPENAI_API_KEY", "models": ["gpt-4o", "gpt-4o-mini"],
//	 "max_in_flight": 64, "rpm": 500, "tpm": 200000, "api_type": "openai"}
//
// The first provider also serves every model that no provider lists.
type Provider struct {
	// Name identifies the provider in logs and in the Redis keys of its
	// limits; letters, digits, '.', '_' and '-'.
	Name    string `json:"name"`
	BaseURL string `json:"base_url"`
	// APIKeyEnv names the variable that holds the API key; empty for
	// providers that need none.
	APIKeyEnv string `json:"api_key_env,omitempty"`
	// APIKey is read from APIKeyEnv. Never logged.
	APIKey string `json:"-"`
	// APIType is "openai" (default) or "azure"; APIVersion is the Azure API
	// version (default OPENAI_API_VERSION).
	APIType    string   `json:"api_type,omitempty"`
	APIVersion string   `json:"api_version,omitempty"`
	Models     []string `json:"models,omitempty"`
	// MaxInFlight caps the requests in flight cluster-wide (default
	// LLM_MAX_IN_FLIGHT); RPM and TPM are per-minute limits, 0 = none.
	MaxInFlight int `json:"max_in_flight,omitempty"`
	RPM         int `json:"rpm,omitempty"`
	TPM         int `json:"tpm,omitempty"`
}

// ProviderIdentity is the identity of the provider that serves model, as
// cache keys and fingerprints name it: "<name> <base_url>" (a name has no
// space). It follows the gateway's routing (gateway.New and its route):
// the provider that lists model (the last that does, as the gateway reads
// the list; Validate allows only one), else the first provider; with no
// resolved Providers, the default provider of the OPENAI_* variables. So
// two processes configured alike name the same provider for every model,
// and changing OPENAI_BASE_URL or LLM_PROVIDERS changes it.
func (l LLM) ProviderIdentity(model string) string {
	p := l.ProviderOf(model)
	return p.Name + " " + p.BaseURL
}

// ProviderOf returns the provider that serves model, as the gateway routes
// it: the last provider that lists it, else the first provider.
func (l LLM) ProviderOf(model string) Provider {
	providers := l.ProviderList()
	p := providers[0]
	for _, c := range providers {
		for _, m := range c.Models {
			if m == model {
				p = c
			}
		}
	}
	return p
}

// Load reads the environment and validates the result.
func Load() (Config, error) {
	return LoadFrom(nil)
}

// LoadFrom reads the given variables (nil means the process environment)
// and validates the result.
func LoadFrom(environ map[string]string) (Config, error) {
	var c Config
	opts := env.Options{}
	if environ != nil {
		opts.Environment = environ
	}
	if err := env.ParseWithOptions(&c, opts); err != nil {
		return c, fmt.Errorf("config: %w", nameVariables(err))
	}
	getenv := os.Getenv
	if environ != nil {
		getenv = func(k string) string { return environ[k] }
	}
	c.Redis.resolve()
	if err := c.LLM.resolve(getenv); err != nil {
		return c, err
	}
	c.Webhook.DeniedPorts = c.servicePorts()
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// Validate reports the first setting that cannot work, naming its variable.
func (c Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", name, fmt.Sprintf(format, args...)))
	}
	errs = append(errs, c.Redis.validate()...)
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		bad("LOG_LEVEL", "%v", err)
	}
	if c.JobDeadline < time.Second {
		bad("JOB_DEADLINE", "must be at least 1s, got %s", c.JobDeadline)
	}
	if c.JobRetention < time.Minute {
		bad("JOB_RETENTION", "must be at least 1m, got %s", c.JobRetention)
	}
	if c.SSEHeartbeat < 100*time.Millisecond {
		bad("SSE_HEARTBEAT", "must be at least 100ms, got %s", c.SSEHeartbeat)
	}
	if c.SnapshotConcurrency < 1 {
		bad("SNAPSHOT_CONCURRENCY", "must be at least 1, got %d", c.SnapshotConcurrency)
	}
	if c.AggregateConcurrency < 1 {
		bad("AGGREGATE_CONCURRENCY", "must be at least 1, got %d", c.AggregateConcurrency)
	}
	if c.TaskCheckInterval < time.Millisecond {
		bad("TASK_CHECK_INTERVAL", "must be at least 1ms, got %s", c.TaskCheckInterval)
	}
	// asynq computes a task's 30 s lease before the dequeue that the wait
	// delays: a long wait would shorten the lease of the task it finds.
	if c.QueueIdleWait < 0 || c.QueueIdleWait > 5*time.Second {
		bad("QUEUE_IDLE_WAIT", "must be between 0 and 5s, got %s", c.QueueIdleWait)
	}
	// Past a second the text stops looking live.
	if c.StreamFlushInterval < 0 || c.StreamFlushInterval > time.Second {
		bad("STREAM_FLUSH_INTERVAL", "must be between 0 and 1s, got %s", c.StreamFlushInterval)
	}
	if c.StreamFlushBytes < 1 || c.StreamFlushBytes > 65536 {
		bad("STREAM_FLUSH_BYTES", "must be between 1 and 65536, got %d", c.StreamFlushBytes)
	}
	if c.ShutdownTimeout < 0 {
		bad("SHUTDOWN_TIMEOUT", "must not be negative")
	}
	if c.SnapshotMaxRetry < 0 || c.SnapshotMaxRetry > 20 {
		bad("SNAPSHOT_MAX_RETRY", "must be between 0 and 20, got %d", c.SnapshotMaxRetry)
	}
	if u, err := url.Parse(c.LLM.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("OPENAI_BASE_URL", "must be an http(s) URL, got %q", c.LLM.BaseURL)
	}
	if c.LLM.APIType != "openai" && c.LLM.APIType != "azure" {
		bad("OPENAI_API_TYPE", "must be openai or azure, got %q", c.LLM.APIType)
	}
	if strings.TrimSpace(c.LLM.Model) == "" {
		bad("LLM_MODEL", "must not be empty")
	}
	if strings.TrimSpace(c.LLM.ExtractionModel) == "" {
		bad("LLM_EXTRACTION_MODEL", "must not be empty")
	}
	if c.LLM.Timeout < time.Second {
		bad("LLM_TIMEOUT", "must be at least 1s, got %s", c.LLM.Timeout)
	}
	errs = append(errs, c.LLM.validate()...)
	errs = append(errs, c.Cache.validate()...)
	errs = append(errs, c.validateAccess()...)
	errs = append(errs, c.CloudWatch.validate()...)
	w := c.Webhook
	if w.Secret != "" {
		if err := checkWebhookSecret(w.Secret); err != nil {
			bad("WEBHOOK_SECRET", "%v", err)
		}
	}
	if w.PreviousSecret != "" {
		if w.Secret == "" {
			bad("WEBHOOK_SECRET_PREVIOUS", "a previous secret is only used alongside a current one, which is not set")
		} else if err := checkWebhookSecret(w.PreviousSecret); err != nil {
			bad("WEBHOOK_SECRET_PREVIOUS", "%v", err)
		}
	}
	if allow, err := ParseAllowList(w.AllowCIDRs); err != nil {
		bad("WEBHOOK_ALLOW_CIDRS", "%v", err)
	} else {
		denied := c.servicePorts()
		for _, e := range allow {
			if slices.Contains(denied, e.Port) {
				bad("WEBHOOK_ALLOW_CIDRS", "%s names port %d, which callbacks may never use (Redis's or the service's own: %v)", e, e.Port, denied)
			}
		}
	}
	if w.AttemptTimeout < 100*time.Millisecond || w.AttemptTimeout > 5*time.Minute {
		bad("WEBHOOK_TIMEOUT", "must be between 100ms and 5m, got %s", w.AttemptTimeout)
	}
	if w.Concurrency < 1 {
		bad("WEBHOOK_CONCURRENCY", "must be at least 1, got %d", w.Concurrency)
	}
	if (c.Admin.User == "") != (c.Admin.Password == "") {
		bad("ADMIN_USER", "ADMIN_USER and ADMIN_PASSWORD go together")
	}
	// A credential pasted with a new line or a space at an end never
	// matches what a person types: refused anywhere, not only in
	// production (see ValidateAPI).
	for _, cred := range [][2]string{{"ADMIN_USER", c.Admin.User}, {"ADMIN_PASSWORD", c.Admin.Password}, {"ADMIN_TOKEN", c.Admin.Token}} {
		if strings.TrimSpace(cred[1]) != cred[1] {
			bad(cred[0], "must not begin or end with white space")
		}
	}
	al := c.Alerts
	if al.Window < time.Minute || al.Window > 24*time.Hour {
		bad("ALERT_WINDOW", "must be between 1m and 24h, got %s", al.Window)
	}
	if al.TotalP95Warning < 0 || al.TotalP95Critical < 0 || al.SnapshotP95Warning < 0 {
		bad("ALERT_TOTAL_P95_WARNING", "alert thresholds must not be negative")
	}
	if al.TotalP95Warning > 0 && al.TotalP95Critical > 0 && al.TotalP95Critical < al.TotalP95Warning {
		bad("ALERT_TOTAL_P95_CRITICAL", "must not be below ALERT_TOTAL_P95_WARNING (%s), got %s", al.TotalP95Warning, al.TotalP95Critical)
	}
	if al.NotifyFormat != "slack" && al.NotifyFormat != "alertmanager" {
		bad("ALERT_NOTIFY_FORMAT", "must be slack or alertmanager, got %q", al.NotifyFormat)
	}
	if al.NotifyInterval < time.Second || al.NotifyInterval > 10*time.Minute {
		bad("ALERT_NOTIFY_INTERVAL", "must be between 1s and 10m, got %s", al.NotifyInterval)
	}
	if al.NotifyURL != "" && c.Webhook.Secret == "" {
		bad("ALERT_NOTIFY_URL", "needs WEBHOOK_SECRET: the notifications are signed like the webhooks")
	}
	return errors.Join(errs...)
}

// ParseLogLevel turns debug, info, warn or error into a slog level.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
	}
	return l, nil
}

// LogValue masks secrets so that the configuration can be logged at start.
func (c Config) LogValue() slog.Value {
	masked := c
	if masked.LLM.APIKey != "" {
		masked.LLM.APIKey = "****"
	}
	if masked.Webhook.Secret != "" {
		masked.Webhook.Secret = "****"
	}
	if masked.Webhook.PreviousSecret != "" {
		masked.Webhook.PreviousSecret = "****"
	}
	if masked.Admin.Password != "" {
		masked.Admin.Password = "****"
	}
	if masked.Admin.Token != "" {
		masked.Admin.Token = "****"
	}
	if masked.Access.EventsTokenSecret != "" {
		masked.Access.EventsTokenSecret = "****"
	}
	if masked.Alerts.NotifyURL != "" {
		// A chat's incoming-webhook URL is its credential (its path).
		masked.Alerts.NotifyURL = "****"
	}
	masked.Redis = masked.Redis.masked()
	return structValue(reflect.ValueOf(masked))
}

// structValue renders a struct as a slog group keyed by the environment
// variables, with durations in their readable form.
func structValue(v reflect.Value) slog.Value {
	var attrs []slog.Attr
	for i := range v.NumField() {
		f, fv := v.Type().Field(i), v.Field(i)
		name := strings.Split(f.Tag.Get("env"), ",")[0]
		switch {
		case name == "-" || !f.IsExported():
			// Derived from other variables, which are logged; may hold keys.
		case f.Type.Kind() == reflect.Struct && name == "":
			attrs = append(attrs, slog.Attr{Key: f.Name, Value: structValue(fv)})
		case f.Type == reflect.TypeOf(time.Duration(0)):
			attrs = append(attrs, slog.String(name, fv.Interface().(time.Duration).String()))
		default:
			attrs = append(attrs, slog.Any(name, fv.Interface()))
		}
	}
	return slog.GroupValue(attrs...)
}

// nameVariables rewrites caarlos0/env parse errors, which name the Go field,
// so that they name the environment variable.
func nameVariables(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	names := envNames(reflect.TypeOf(Config{}))
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if name, ok := names[pe.Name]; ok {
				out = append(out, fmt.Errorf("%s: %w", name, pe.Err))
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

func envNames(t reflect.Type) map[string]string {
	m := map[string]string{}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Tag.Get("env") == "" && f.Type != reflect.TypeOf(time.Time{}) {
			for k, v := range envNames(f.Type) {
				m[k] = v
			}
			continue
		}
		if tag := f.Tag.Get("env"); tag != "" {
			m[f.Name] = strings.Split(tag, ",")[0]
		}
	}
	return m
}
