package config

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadFromDefaults(t *testing.T) {
	t.Parallel()
	got, err := LoadFrom(map[string]string{})
	if err != nil {
		t.Fatalf("LoadFrom: %v", err)
	}
	want := Config{
		Redis:                Redis{URL: "redis://127.0.0.1:6379/0"},
		LogLevel:             "info",
		APIAddr:              ":8080",
		JobDeadline:          120 * time.Second,
		JobRetention:         24 * time.Hour,
		SSEHeartbeat:         15 * time.Second,
		WorkerAddr:           ":9090",
		SnapshotConcurrency:  32,
		AggregateConcurrency: 16,
		TaskCheckInterval:    10 * time.Millisecond,
		QueueIdleWait:        2 * time.Second,
		StreamFlushInterval:  50 * time.Millisecond,
		StreamFlushBytes:     1024,
		ShutdownTimeout:      25 * time.Second,
		SnapshotMaxRetry:     3,
		LLM: LLM{
			BaseURL:             "https://api.openai.com/v1",
			APIType:             "openai",
			APIVersion:          "2024-06-01",
			Model:               "gpt-4o",
			ExtractionModel:     "gpt-4o-mini",
			Timeout:             90 * time.Second,
			FirstTokenTimeout:   30 * time.Second,
			MaxInFlight:         64,
			MaxAttempts:         4,
			RetryMaxWait:        5 * time.Second,
			CapacityWait:        2 * time.Second,
			BreakerFailures:     20,
			BreakerFailureRatio: 0.5,
			BreakerWindow:       30 * time.Second,
			BreakerOpenFor:      30 * time.Second,
			BreakerRamp:         10 * time.Second,
			BreakerTrials:       3,
			Providers: []Provider{{
				Name: DefaultProvider, BaseURL: "https://api.openai.com/v1", APIKeyEnv: "OPENAI_API_KEY",
				APIType: "openai", APIVersion: "2024-06-01", MaxInFlight: 64,
			}},
			Fallbacks: map[string][]string{},
		},
		Webhook: Webhook{AttemptTimeout: 15 * time.Second, Concurrency: 8, DeniedPorts: []uint16{6379, 8080, 9090, 26379}},
		Env:     "development",
		Admin:   Admin{Enabled: true},
		Alerts:  Alerts{Window: 15 * time.Minute, TotalP95Warning: 45 * time.Second, TotalP95Critical: 90 * time.Second, SnapshotP95Warning: 30 * time.Second, NotifyFormat: "slack", NotifyInterval: 15 * time.Second},
		Cache: Cache{
			Caching: true, PastTTL: 720 * time.Hour, TodayTTL: time.Hour, Dedup: true, IdempotencyTTL: 24 * time.Hour,
			WarmSchedule: "@every 1h", WarmShare: 0.25, WarmConcurrency: 2,
		},
		Access:     defaultAccess,
		CloudWatch: CloudWatch{Interval: time.Minute},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadFrom(empty) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestLoadFromOverrides(t *testing.T) {
	t.Parallel()
	got, err := LoadFrom(map[string]string{
		"REDIS_URL":               "rediss://:pw@cache.internal:6380/2",
		"LOG_LEVEL":               "debug",
		"API_ADDR":                "127.0.0.1:18080",
		"JOB_DEADLINE":            "45s",
		"JOB_RETENTION":           "2h",
		"SSE_HEARTBEAT":           "100ms",
		"WORKER_ADDR":             ":19090",
		"SNAPSHOT_CONCURRENCY":    "4",
		"AGGREGATE_CONCURRENCY":   "2",
		"TASK_CHECK_INTERVAL":     "1ms",
		"QUEUE_IDLE_WAIT":         "0",
		"STREAM_FLUSH_INTERVAL":   "20ms",
		"STREAM_FLUSH_BYTES":      "512",
		"SHUTDOWN_TIMEOUT":        "0s",
		"SNAPSHOT_MAX_RETRY":      "0",
		"OPENAI_BASE_URL":         "http://localhost:11434/v1",
		"OPENAI_API_KEY":          "k",
		"OPENAI_API_TYPE":         "azure",
		"OPENAI_API_VERSION":      "2025-01-01",
		"LLM_MODEL":               "llama3.1:8b",
		"LLM_EXTRACTION_MODEL":    "qwen2.5:3b",
		"LLM_NARRATIVE_MODEL":     "mistral",
		"LLM_TIMEOUT":             "1s",
		"LLM_FIRST_TOKEN_TIMEOUT": "0s",
		"LLM_MAX_IN_FLIGHT":       "3",
		"LLM_RPM":                 "600",
		"LLM_TPM":                 "90000",
		"LLM_FALLBACKS":           "llama3.1:8b=mistral|qwen2.5:3b, mistral = qwen2.5:3b",
		"LLM_MAX_ATTEMPTS":        "1",
		"LLM_RETRY_MAX_WAIT":      "0s",
		"LLM_CAPACITY_WAIT":       "500ms",
		"LLM_BREAKER_FAILURES":    "2",
		"LLM_BREAKER_OPEN_FOR":    "1s",
		"WEBHOOK_SECRET":          testSecretB,
		"WEBHOOK_SECRET_PREVIOUS": testSecretA,
		"WEBHOOK_ALLOW_HTTP":      "true",
		"WEBHOOK_ALLOW_CIDRS":     "127.0.0.1/32, ::1",
		"WEBHOOK_TIMEOUT":         "2s",
		"WEBHOOK_CONCURRENCY":     "3",
		"CACHE_ENABLED":           "false",
		"CACHE_PAST_TTL":          "48h",
		"CACHE_TODAY_TTL":         "10m",
		"DEDUP_ENABLED":           "false",
		"IDEMPOTENCY_TTL":         "1h",
		"CACHE_WARM_QUESTIONS":    "What are the best AI models?\n\n  Who leads in EV sales?  \n",
		"CACHE_WARM_SCHEDULE":     "0 * * * *",
		"CACHE_WARM_SHARE":        "0.5",
		"CACHE_WARM_CONCURRENCY":  "1",
	})
	if err != nil {
		t.Fatalf("LoadFrom: %v", err)
	}
	want := Config{
		Redis:                Redis{URL: "rediss://:pw@cache.internal:6380/2"},
		LogLevel:             "debug",
		APIAddr:              "127.0.0.1:18080",
		JobDeadline:          45 * time.Second,
		JobRetention:         2 * time.Hour,
		SSEHeartbeat:         100 * time.Millisecond,
		WorkerAddr:           ":19090",
		SnapshotConcurrency:  4,
		AggregateConcurrency: 2,
		TaskCheckInterval:    time.Millisecond,
		StreamFlushInterval:  20 * time.Millisecond,
		StreamFlushBytes:     512,
		ShutdownTimeout:      0,
		SnapshotMaxRetry:     0,
		LLM: LLM{
			BaseURL:             "http://localhost:11434/v1",
			APIKey:              "k",
			APIType:             "azure",
			APIVersion:          "2025-01-01",
			Model:               "llama3.1:8b",
			ExtractionModel:     "qwen2.5:3b",
			NarrativeModel:      "mistral",
			Timeout:             time.Second,
			MaxInFlight:         3,
			RPM:                 600,
			TPM:                 90000,
			FallbacksSpec:       "llama3.1:8b=mistral|qwen2.5:3b, mistral = qwen2.5:3b",
			MaxAttempts:         1,
			CapacityWait:        500 * time.Millisecond,
			BreakerFailures:     2,
			BreakerFailureRatio: 0.5,
			BreakerWindow:       30 * time.Second,
			BreakerOpenFor:      time.Second,
			BreakerRamp:         10 * time.Second,
			BreakerTrials:       3,
			Providers: []Provider{{
				Name: DefaultProvider, BaseURL: "http://localhost:11434/v1", APIKeyEnv: "OPENAI_API_KEY", APIKey: "k",
				APIType: "azure", APIVersion: "2025-01-01", MaxInFlight: 3, RPM: 600, TPM: 90000,
			}},
			Fallbacks: map[string][]string{"llama3.1:8b": {"mistral", "qwen2.5:3b"}, "mistral": {"qwen2.5:3b"}},
		},
		Webhook: Webhook{
			Secret: testSecretB, PreviousSecret: testSecretA, AllowHTTP: true,
			AllowCIDRs: "127.0.0.1/32, ::1", AttemptTimeout: 2 * time.Second, Concurrency: 3,
			DeniedPorts: []uint16{6379, 6380, 18080, 19090, 26379},
		},
		Env:    "development",
		Admin:  Admin{Enabled: true},
		Alerts: Alerts{Window: 15 * time.Minute, TotalP95Warning: 45 * time.Second, TotalP95Critical: 90 * time.Second, SnapshotP95Warning: 30 * time.Second, NotifyFormat: "slack", NotifyInterval: 15 * time.Second},
		Cache: Cache{
			PastTTL: 48 * time.Hour, TodayTTL: 10 * time.Minute, IdempotencyTTL: time.Hour,
			WarmQuestions: []string{"What are the best AI models?", "", "  Who leads in EV sales?  ", ""},
			WarmSchedule:  "0 * * * *", WarmShare: 0.5, WarmConcurrency: 1,
		},
		Access:     defaultAccess,
		CloudWatch: CloudWatch{Interval: time.Minute},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadFrom =\n%+v\nwant\n%+v", got, want)
	}
}

func TestCacheQuestions(t *testing.T) {
	t.Parallel()
	c := Cache{WarmQuestions: []string{"What are the best AI models?", "", "  Who leads in EV sales?  ", " "}}
	want := []string{"What are the best AI models?", "Who leads in EV sales?"}
	if got := c.Questions(); !reflect.DeepEqual(got, want) {
		t.Errorf("Questions() = %q, want %q", got, want)
	}
}

// varName matches anything that looks like one of our variable names.
var varName = regexp.MustCompile(`\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b`)

func TestLoadFromInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, value string
		// detail must also appear in the error.
		detail string
	}{
		{"REDIS_URL", "http://localhost:6379", "scheme"},
		{"REDIS_URL", "not a url", ""},
		{"LOG_LEVEL", "loud", `"loud"`},
		{"JOB_DEADLINE", "abc", `"abc"`},
		{"JOB_DEADLINE", "500ms", "500ms"},
		{"JOB_RETENTION", "30s", "30s"},
		{"SSE_HEARTBEAT", "10ms", "10ms"},
		{"SNAPSHOT_CONCURRENCY", "0", "0"},
		{"SNAPSHOT_CONCURRENCY", "many", `"many"`},
		{"AGGREGATE_CONCURRENCY", "-1", "-1"},
		{"TASK_CHECK_INTERVAL", "0", "0s"},
		{"QUEUE_IDLE_WAIT", "-1s", "-1s"},
		{"QUEUE_IDLE_WAIT", "6s", "6s"},
		{"STREAM_FLUSH_INTERVAL", "-1ms", "-1ms"},
		{"STREAM_FLUSH_INTERVAL", "2s", "2s"},
		{"STREAM_FLUSH_BYTES", "0", "0"},
		{"STREAM_FLUSH_BYTES", "70000", "70000"},
		{"SHUTDOWN_TIMEOUT", "-1s", "negative"},
		{"SNAPSHOT_MAX_RETRY", "21", "21"},
		{"SNAPSHOT_MAX_RETRY", "-1", "-1"},
		{"OPENAI_BASE_URL", "ftp://x", `"ftp://x"`},
		{"OPENAI_BASE_URL", "https://", ""},
		{"OPENAI_BASE_URL", "localhost:11434/v1", ""},
		{"OPENAI_API_TYPE", "x", `"x"`},
		{"LLM_MODEL", "  ", "empty"},
		{"LLM_EXTRACTION_MODEL", " ", "empty"},
		{"LLM_TIMEOUT", "10ms", "10ms"},
		{"LLM_TIMEOUT", "abc", `"abc"`},
		{"LLM_FIRST_TOKEN_TIMEOUT", "-1s", "negative"},
		{"LLM_FIRST_TOKEN_TIMEOUT", "10ms", "10ms"},
		{"LLM_MAX_IN_FLIGHT", "0", "0"},
		{"LLM_MAX_IN_FLIGHT", "lots", `"lots"`},
		{"LLM_RPM", "-1", "-1"},
		{"LLM_TPM", "-5", "-5"},
		{"LLM_MAX_ATTEMPTS", "0", "0"},
		{"LLM_MAX_ATTEMPTS", "11", "11"},
		{"LLM_RETRY_MAX_WAIT", "2m", "2m0s"},
		{"LLM_CAPACITY_WAIT", "-1s", "-1s"},
		{"LLM_CAPACITY_WAIT", "1m", "1m0s"},
		{"LLM_BREAKER_FAILURES", "0", "0"},
		{"LLM_BREAKER_OPEN_FOR", "10ms", "10ms"},
		{"LLM_FALLBACKS", "gpt-4o", `"gpt-4o"`},
		{"LLM_FALLBACKS", "a=b,a=c", `"a" given twice`},
		{"LLM_FALLBACKS", "a=a", "itself"},
		{"LLM_FALLBACKS", "a=b|b", "twice"},
		{"LLM_FALLBACKS", "a=b||c", "empty"},
		{"CACHE_PAST_TTL", "30s", "30s"},
		{"CACHE_TODAY_TTL", "0s", "0s"},
		{"CACHE_TODAY_TTL", "1000h", "past dates"},
		{"IDEMPOTENCY_TTL", "1s", "1s"},
		{"CACHE_WARM_SCHEDULE", "hourly", `"hourly"`},
		{"CACHE_WARM_SCHEDULE", "@every 1x", ""},
		{"CACHE_WARM_SHARE", "0", "0"},
		{"CACHE_WARM_SHARE", "1.5", "1.5"},
		{"CACHE_WARM_CONCURRENCY", "0", "0"},
		{"CACHE_WARM_QUESTIONS", "ok?\nbad\u0001question", "question 2"},
		{"LLM_PROVIDERS", "{", "JSON array"},
		{"LLM_PROVIDERS", "[]", "empty provider list"},
		{"LLM_PROVIDERS", `[{"name":"a","base_url":"http://x","colour":"red"}]`, "colour"},
		{"LLM_PROVIDERS", `[{"name":"a b","base_url":"http://x"}]`, `"a b"`},
		{"LLM_PROVIDERS", `[{"name":"a","base_url":"x"}]`, "base_url"},
		{"LLM_PROVIDERS", `[{"name":"a","base_url":"http://x"},{"name":"a","base_url":"http://y"}]`, "twice"},
		{"LLM_PROVIDERS", `[{"name":"a","base_url":"http://x","api_type":"gcp"}]`, `"gcp"`},
		{"LLM_PROVIDERS", `[{"name":"a","base_url":"http://x","max_in_flight":-1}]`, "max_in_flight"},
		{"LLM_PROVIDERS", `[{"name":"a","base_url":"http://x","rpm":-1}]`, "rpm"},
		{"LLM_PROVIDERS", `[{"name":"a","base_url":"http://x","models":["m"]},{"name":"b","base_url":"http://y","models":["m"]}]`, "also served"},
		{"LLM_PROVIDERS", `[{"name":"a","base_url":"http://x","api_key_env":"NOT_SET_ANYWHERE"}]`, "empty or not set"},
		{"WEBHOOK_SECRET", "plain-secret", "whsec_"},
		{"WEBHOOK_SECRET", "whsec_***", "base64"},
		{"WEBHOOK_SECRET", "whsec_c2hvcnQ=", "24 to 64 bytes"},
		{"WEBHOOK_SECRET_PREVIOUS", testSecretA, "current one"},
		{"WEBHOOK_ALLOW_HTTP", "sometimes", `"sometimes"`},
		{"WEBHOOK_ALLOW_CIDRS", "10.0.0.0/8,not-a-range", `"not-a-range"`},
		{"WEBHOOK_TIMEOUT", "10ms", "10ms"},
		{"WEBHOOK_TIMEOUT", "1h", "1h0m0s"},
		{"WEBHOOK_CONCURRENCY", "0", "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			t.Parallel()
			_, err := LoadFrom(map[string]string{tt.name: tt.value})
			if err == nil {
				t.Fatalf("LoadFrom accepted %s=%q", tt.name, tt.value)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.name+":") {
				t.Errorf("error %q does not name %s", msg, tt.name)
			}
			if !strings.Contains(msg, tt.detail) {
				t.Errorf("error %q lacks %q", msg, tt.detail)
			}
			// Only the variable at fault is named: the others have their
			// valid defaults.
			for _, name := range varName.FindAllString(msg, -1) {
				if name != tt.name {
					t.Errorf("error %q also names %s", msg, name)
				}
			}
		})
	}
}

// Webhook secrets of the Standard Webhooks form (24-byte keys).
const (
	testSecretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	testSecretB = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

func TestWebhookSecretErrorsDoNotRepeatIt(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"TOPSECRETvalue", "whsec_TOPSECRET***", "whsec_VE9QU0VDUkVU"} {
		for _, name := range []string{"WEBHOOK_SECRET", "WEBHOOK_SECRET_PREVIOUS"} {
			env := map[string]string{name: v}
			if name == "WEBHOOK_SECRET_PREVIOUS" {
				env["WEBHOOK_SECRET"] = testSecretA
			}
			_, err := LoadFrom(env)
			if err == nil {
				t.Fatalf("%s=%q accepted", name, v)
			}
			if strings.Contains(err.Error(), v) || strings.Contains(err.Error(), strings.TrimPrefix(v, "whsec_")) {
				t.Errorf("error %q repeats the secret", err)
			}
		}
	}
}

func TestWebhookSettings(t *testing.T) {
	t.Parallel()
	off, err := LoadFrom(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if w := off.Webhook; w.Enabled() || w.AllowHTTP || len(w.AllowList()) != 0 || !slices.Equal(w.Denied(), []uint16{6379, 8080, 9090, 26379}) {
		t.Errorf("default webhooks %+v (allow-list %v, denied %v), want off, https only, no allow-list, and Redis's and the service's ports denied", w, w.AllowList(), w.Denied())
	}
	on, err := LoadFrom(map[string]string{"WEBHOOK_SECRET": testSecretA, "WEBHOOK_ALLOW_HTTP": "1", "WEBHOOK_ALLOW_CIDRS": "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if w := on.Webhook; !w.Enabled() || !w.AllowHTTP || len(w.AllowList()) != 1 || w.AllowList()[0].String() != "127.0.0.1/32" {
		t.Errorf("webhooks %+v (allow-list %v), want on, http allowed and 127.0.0.1/32", w, w.AllowList())
	}
}

func TestLogValueMasksWebhookSecrets(t *testing.T) {
	t.Parallel()
	c, err := LoadFrom(map[string]string{"WEBHOOK_SECRET": testSecretB, "WEBHOOK_SECRET_PREVIOUS": testSecretA})
	if err != nil {
		t.Fatal(err)
	}
	out, m := logged(t, c)
	for _, secret := range []string{testSecretA, testSecretB} {
		if strings.Contains(out, strings.TrimPrefix(secret, "whsec_")) {
			t.Errorf("webhook secret in log: %s", out)
		}
	}
	wh, _ := m["Webhook"].(map[string]any)
	if wh["WEBHOOK_SECRET"] != "****" || wh["WEBHOOK_SECRET_PREVIOUS"] != "****" {
		t.Errorf("webhook secrets logged as %v / %v, want ****", wh["WEBHOOK_SECRET"], wh["WEBHOOK_SECRET_PREVIOUS"])
	}
	if wh["WEBHOOK_TIMEOUT"] != "15s" {
		t.Errorf("WEBHOOK_TIMEOUT logged as %v, want 15s", wh["WEBHOOK_TIMEOUT"])
	}
	if c.Webhook.Secret != testSecretB {
		t.Error("LogValue changed the config")
	}
}

func TestLoadFromNamesEveryInvalidVariable(t *testing.T) {
	t.Parallel()
	_, err := LoadFrom(map[string]string{
		"SNAPSHOT_CONCURRENCY": "0",
		"OPENAI_API_TYPE":      "x",
		"LLM_TIMEOUT":          "10ms",
	})
	if err == nil {
		t.Fatal("LoadFrom accepted three invalid variables")
	}
	for _, name := range []string{"SNAPSHOT_CONCURRENCY", "OPENAI_API_TYPE", "LLM_TIMEOUT"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}

	// Parse errors, too, name each variable.
	_, err = LoadFrom(map[string]string{"JOB_DEADLINE": "abc", "LLM_TIMEOUT": "soon"})
	if err == nil {
		t.Fatal("LoadFrom accepted two unparsable durations")
	}
	for _, name := range []string{"JOB_DEADLINE", "LLM_TIMEOUT"} {
		if !strings.Contains(err.Error(), name+":") {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

func TestParseLogLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want slog.Level
		ok   bool
	}{
		{"debug", slog.LevelDebug, true},
		{"info", slog.LevelInfo, true},
		{"warn", slog.LevelWarn, true},
		{"error", slog.LevelError, true},
		{"ERROR", slog.LevelError, true},
		{"loud", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseLogLevel(tt.in)
		if tt.ok != (err == nil) {
			t.Errorf("ParseLogLevel(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && got != tt.want {
			t.Errorf("ParseLogLevel(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// logged renders c as the service logs it and returns the JSON text and the
// "config" attribute decoded.
func logged(t *testing.T, c Config) (string, map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", c)
	var rec struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	if rec.Config == nil {
		t.Fatalf("log line has no config object: %s", buf.String())
	}
	return buf.String(), rec.Config
}

func TestLogValueMasksAPIKey(t *testing.T) {
	t.Parallel()
	c, err := LoadFrom(map[string]string{"OPENAI_API_KEY": "sk-test-Zq8TOPSECRET"})
	if err != nil {
		t.Fatal(err)
	}
	out, m := logged(t, c)
	if strings.Contains(out, "sk-test-Zq8TOPSECRET") || strings.Contains(out, "TOPSECRET") {
		t.Errorf("API key in log: %s", out)
	}
	llm, _ := m["LLM"].(map[string]any)
	if got := llm["OPENAI_API_KEY"]; got != "****" {
		t.Errorf("LLM.APIKey logged as %v, want ****; line %s", got, out)
	}
	if got := llm["LLM_MODEL"]; got != "gpt-4o" {
		t.Errorf("LLM.Model logged as %v, want gpt-4o (only secrets are masked)", got)
	}
	// The caller's value is untouched.
	if c.LLM.APIKey != "sk-test-Zq8TOPSECRET" {
		t.Errorf("LogValue changed the config: APIKey = %q", c.LLM.APIKey)
	}
}

func TestLogValueEmptyAPIKeyStaysEmpty(t *testing.T) {
	t.Parallel()
	c, err := LoadFrom(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	out, m := logged(t, c)
	llm, _ := m["LLM"].(map[string]any)
	if got := llm["OPENAI_API_KEY"]; got != "" {
		t.Errorf("empty API key logged as %v", got)
	}
	if strings.Contains(out, "****") {
		t.Errorf("nothing to mask, yet the log has ****: %s", out)
	}
}

func TestLogValueMasksRedisPassword(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url, secret, want string
	}{
		{"redis://app:hunter2secret@cache:6379/0", "hunter2secret", "redis://app:****@cache:6379/0"},
		{"rediss://:hunter2secret@cache:6380/1", "hunter2secret", "rediss://:****@cache:6380/1"},
		{"redis://app:p%40ss%2Fword@cache:6379/0", "p%40ss%2Fword", "redis://app:****@cache:6379/0"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			c, err := LoadFrom(map[string]string{"REDIS_URL": tt.url})
			if err != nil {
				t.Fatal(err)
			}
			out, m := logged(t, c)
			if strings.Contains(out, tt.secret) {
				t.Errorf("Redis password in log: %s", out)
			}
			if pw, _ := url.PathUnescape(tt.secret); strings.Contains(out, pw) {
				t.Errorf("unescaped Redis password in log: %s", out)
			}
			if !strings.Contains(out, "****") {
				t.Errorf("log has no **** mask: %s", out)
			}
			if got := group(t, m, "Redis")["REDIS_URL"]; got != tt.want {
				t.Errorf("REDIS_URL logged as %v, want %s", got, tt.want)
			}
			if c.Redis.URL != tt.url {
				t.Errorf("LogValue changed the config: Redis.URL = %q", c.Redis.URL)
			}
		})
	}
}

func TestLogValueRedisWithoutPassword(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"redis://127.0.0.1:6379/0", "redis://app@cache:6379/0"} {
		c, err := LoadFrom(map[string]string{"REDIS_URL": u})
		if err != nil {
			t.Fatal(err)
		}
		_, m := logged(t, c)
		if got := group(t, m, "Redis")["REDIS_URL"]; got != u {
			t.Errorf("RedisURL logged as %v, want it unchanged (%s)", got, u)
		}
	}
}

func TestLoadFromProviders(t *testing.T) {
	t.Parallel()
	c, err := LoadFrom(map[string]string{
		"LLM_MAX_IN_FLIGHT":  "16",
		"OPENAI_API_VERSION": "2025-02-01",
		"LLM_PROVIDERS": `[
			{"name":"openai","base_url":"https://api.openai.com/v1","api_key_env":"KEY_A","models":["gpt-4o","gpt-4o-mini"],"max_in_flight":64,"rpm":500,"tpm":200000},
			{"name":"local","base_url":"http://127.0.0.1:11434/v1","models":["llama3.1:8b"]},
			{"name":"az","base_url":"https://r.example/","api_key_env":"KEY_B","api_type":"azure","api_version":"2024-10-21"}
		]`,
		"KEY_A":         "sk-provider-a-SECRET",
		"KEY_B":         "sk-provider-b-SECRET",
		"LLM_FALLBACKS": "gpt-4o=llama3.1:8b",
	})
	if err != nil {
		t.Fatalf("LoadFrom: %v", err)
	}
	want := []Provider{
		{Name: "openai", BaseURL: "https://api.openai.com/v1", APIKeyEnv: "KEY_A", APIKey: "sk-provider-a-SECRET", APIType: "openai",
			APIVersion: "2025-02-01", Models: []string{"gpt-4o", "gpt-4o-mini"}, MaxInFlight: 64, RPM: 500, TPM: 200000},
		{Name: "local", BaseURL: "http://127.0.0.1:11434/v1", APIType: "openai", APIVersion: "2025-02-01",
			Models: []string{"llama3.1:8b"}, MaxInFlight: 16},
		{Name: "az", BaseURL: "https://r.example/", APIKeyEnv: "KEY_B", APIKey: "sk-provider-b-SECRET", APIType: "azure",
			APIVersion: "2024-10-21", MaxInFlight: 16},
	}
	if !reflect.DeepEqual(c.LLM.Providers, want) {
		t.Errorf("Providers =\n%+v\nwant\n%+v", c.LLM.Providers, want)
	}
	if !reflect.DeepEqual(c.LLM.Fallbacks, map[string][]string{"gpt-4o": {"llama3.1:8b"}}) {
		t.Errorf("Fallbacks = %v", c.LLM.Fallbacks)
	}
	out, m := logged(t, c)
	if strings.Contains(out, "-SECRET") {
		t.Errorf("a provider's API key is in the log: %s", out)
	}
	llm, _ := m["LLM"].(map[string]any)
	if got, _ := llm["LLM_PROVIDERS"].(string); !strings.Contains(got, `"api_key_env":"KEY_A"`) {
		t.Errorf("LLM_PROVIDERS logged as %q, want the declaration (which names key variables, not keys)", got)
	}
}

func TestParseFallbacks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec string
		want map[string][]string
	}{
		{"", map[string][]string{}},
		{"  ", map[string][]string{}},
		{"gpt-4o=gpt-4o-mini|gpt-3.5-turbo,sim-a=sim-b", map[string][]string{"gpt-4o": {"gpt-4o-mini", "gpt-3.5-turbo"}, "sim-a": {"sim-b"}}},
		{" a = b | c ", map[string][]string{"a": {"b", "c"}}},
		{"a=b,b=a", map[string][]string{"a": {"b"}, "b": {"a"}}},
	}
	for _, tt := range tests {
		got, err := ParseFallbacks(tt.spec)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseFallbacks(%q) = %v, %v; want %v", tt.spec, got, err, tt.want)
		}
	}
}

// Parse errors name the variable by the Go field's name (nameVariables), so
// field names must not repeat anywhere in Config.
func TestFieldNamesAreUnique(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	var walk func(rt reflect.Type, path string)
	walk = func(rt reflect.Type, path string) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			if f.Type.Kind() == reflect.Struct && f.Tag.Get("env") == "" {
				walk(f.Type, path+f.Name+".")
				continue
			}
			if f.Tag.Get("env") == "" || f.Tag.Get("env") == "-" {
				continue
			}
			if prev, dup := seen[f.Name]; dup {
				t.Errorf("field name %s is used by %s and %s%s", f.Name, prev, path, f.Name)
			}
			seen[f.Name] = path + f.Name
		}
	}
	walk(reflect.TypeOf(Config{}), "")
}

// Callbacks may never use Redis's port (REDIS_URL), the api's and the
// worker's (API_ADDR, WORKER_ADDR), nor 6379 and 26379: not on an
// allow-listed address, nor on a public one.
func TestWebhookDeniedPorts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want []uint16
	}{
		{"defaults", map[string]string{}, []uint16{6379, 8080, 9090, 26379}},
		{"configured", map[string]string{"REDIS_URL": "redis://10.0.0.5:7000/0", "API_ADDR": "127.0.0.1:18080", "WORKER_ADDR": ":19090"},
			[]uint16{6379, 7000, 18080, 19090, 26379}},
		{"a Redis URL without a port", map[string]string{"REDIS_URL": "redis://cache.internal/1"}, []uint16{6379, 8080, 9090, 26379}},
		{"an address without a port", map[string]string{"API_ADDR": "localhost"}, []uint16{6379, 9090, 26379}},
		{"sentinels", map[string]string{"REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_ADDRS": "s1:26380,s2:26381"}, []uint16{6379, 8080, 9090, 26379, 26380, 26381}},
		{"cluster seeds", map[string]string{"REDIS_CLUSTER_ADDRS": "n1:7000,n2:7001"}, []uint16{6379, 7000, 7001, 8080, 9090, 26379}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := LoadFrom(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Webhook.Denied(); !slices.Equal(got, tt.want) {
				t.Errorf("denied ports %v, want %v", got, tt.want)
			}
		})
	}
	// Without LoadFrom, the usual ports of Redis are denied all the same.
	if got := (Webhook{}).Denied(); !slices.Equal(got, []uint16{6379, 26379}) {
		t.Errorf("denied ports of a bare Webhook %v, want 6379 and 26379", got)
	}
}

func TestWebhookAllowCIDRs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		value string
		want  string // Policy's entries, joined by " "; or the error's text
		ok    bool
	}{
		{"127.0.0.1", "127.0.0.1/32", true},
		{"127.0.0.1:9000, 10.1.0.0/16, [fd00::/8]:8443, ::1", "127.0.0.1/32:9000 10.1.0.0/16 [fd00::/8]:8443 ::1/128", true},
		{"10.0.0.0/8:http", `WEBHOOK_ALLOW_CIDRS: "10.0.0.0/8:http" is not an address or CIDR range with an optional port`, false},
		{"127.0.0.1:6379", "WEBHOOK_ALLOW_CIDRS: 127.0.0.1/32:6379 names port 6379, which callbacks may never use", false},
		{"10.0.0.0/8:26379", "names port 26379", false},
		{"127.0.0.1:8080", "names port 8080", false},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			t.Parallel()
			c, err := LoadFrom(map[string]string{"WEBHOOK_ALLOW_CIDRS": tt.value})
			if !tt.ok {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want one with %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range c.Webhook.AllowList() {
				got = append(got, e.String())
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("entries %v, want %s", got, tt.want)
			}
		})
	}
}

// In production the admin credentials must be strong: a token of 32
// characters or more, a password of 16 or more, no white space in any;
// anywhere, none may begin or end with white space. No error repeats one.
// Only the errors about ADMIN_* count here: other sections have checks of
// their own in production.
func TestAdminCredentials(t *testing.T) {
	t.Parallel()
	const (
		token    = "tok-0123456789abcdef0123456789ab" // 32
		password = "pw-0123456789abc"                 // 16
	)
	base, err := LoadFrom(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		prod  bool
		admin Admin
		want  []string // parts of the ADMIN_* errors of Validate and ValidateAPI; none: valid
	}{
		{"strong token", true, Admin{Enabled: true, Token: token}, nil},
		{"strong basic auth", true, Admin{Enabled: true, User: "ops", Password: password}, nil},
		{"UI off, no credentials", true, Admin{}, nil},
		{"weak credentials allowed in development", false, Admin{Enabled: true, Token: "t", User: "o p", Password: "p"}, nil},
		{"one-character token", true, Admin{Enabled: true, Token: "t"}, []string{"config: ADMIN_TOKEN: must be at least 32 characters in production (ENV), got 1"}},
		{"token one short", true, Admin{Enabled: true, Token: token[1:]}, []string{"ADMIN_TOKEN: must be at least 32 characters"}},
		{"short password", true, Admin{Enabled: true, User: "ops", Password: "s3cret"}, []string{"config: ADMIN_PASSWORD: must be at least 16 characters in production (ENV), got 6"}},
		{"white space in the token", true, Admin{Enabled: true, Token: token[:10] + " " + token[10:]}, []string{"config: ADMIN_TOKEN: must not contain white space in production (ENV)"}},
		{"white space in the user", true, Admin{Enabled: true, User: "o ps", Password: password}, []string{"ADMIN_USER: must not contain white space in production"}},
		{"white space in the password", true, Admin{Enabled: true, User: "ops", Password: password + "\tx"}, []string{"ADMIN_PASSWORD: must not contain white space in production"}},
		{"weak even with the UI off", true, Admin{Token: "short"}, []string{"ADMIN_TOKEN: must be at least 32"}},
		{"no credentials", true, Admin{Enabled: true}, []string{"ADMIN_UI_ENABLED"}},
		{"a password without a user", true, Admin{Enabled: true, Password: password}, []string{"ADMIN_USER: ADMIN_USER and ADMIN_PASSWORD go together"}},
		{"blank token", true, Admin{Enabled: true, Token: "   "}, []string{"config: ADMIN_TOKEN: must not begin or end with white space"}},
		{"token with a new line, development", false, Admin{Token: token + "\n"}, []string{"ADMIN_TOKEN: must not begin or end with white space"}},
		{"password with a space, development", false, Admin{User: "ops", Password: " " + password}, []string{"ADMIN_PASSWORD: must not begin or end with white space"}},
		{"user with a space, development", false, Admin{User: "ops ", Password: password}, []string{"ADMIN_USER: must not begin or end with white space"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := base
			c.Admin = tt.admin
			if tt.prod {
				c.Env = "production"
			}
			var admin []string
			for _, err := range []error{c.Validate(), c.ValidateAPI()} {
				if err == nil {
					continue
				}
				for _, line := range strings.Split(err.Error(), "\n") {
					if strings.Contains(line, "ADMIN_") {
						admin = append(admin, line)
					}
				}
			}
			got := strings.Join(admin, "\n")
			if len(tt.want) == 0 {
				if got != "" {
					t.Fatalf("refused: %s", got)
				}
				return
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("errors %q, want one saying %q", got, w)
				}
			}
			for _, v := range []string{tt.admin.User, tt.admin.Password, tt.admin.Token} {
				if v = strings.TrimSpace(v); len(v) > 3 && strings.Contains(got, v) {
					t.Errorf("errors %q repeat a credential", got)
				}
			}
		})
	}
}

// The alert notifications' settings: validated, and the URL (a chat's
// incoming-webhook URL is its credential) never logged.
func TestAlertNotify(t *testing.T) {
	t.Parallel()
	hook := "https://hooks.example.com/services/T000/B000/secretpart"
	tests := []struct {
		name string
		env  map[string]string
		bad  string // the variable refused; "" when valid
	}{
		{"off", map[string]string{}, ""},
		{"slack", map[string]string{"ALERT_NOTIFY_URL": hook, "WEBHOOK_SECRET": testSecretA}, ""},
		{"alertmanager", map[string]string{"ALERT_NOTIFY_URL": hook, "WEBHOOK_SECRET": testSecretA, "ALERT_NOTIFY_FORMAT": "alertmanager"}, ""},
		{"unsigned", map[string]string{"ALERT_NOTIFY_URL": hook}, "ALERT_NOTIFY_URL"},
		{"unknown format", map[string]string{"ALERT_NOTIFY_FORMAT": "teams"}, "ALERT_NOTIFY_FORMAT"},
		{"interval too short", map[string]string{"ALERT_NOTIFY_INTERVAL": "100ms"}, "ALERT_NOTIFY_INTERVAL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := LoadFrom(tt.env)
			if tt.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tt.bad) {
					t.Fatalf("LoadFrom = %v, want %s refused", err, tt.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out, _ := logged(t, c); strings.Contains(out, "secretpart") {
				t.Errorf("the alert URL is in the log: %s", out)
			}
		})
	}
}
