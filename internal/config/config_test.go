package config

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/url"
	"reflect"
	"regexp"
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
		RedisURL:             "redis://127.0.0.1:6379/0",
		LogLevel:             "info",
		APIAddr:              ":8080",
		JobDeadline:          120 * time.Second,
		JobRetention:         24 * time.Hour,
		SSEHeartbeat:         15 * time.Second,
		WorkerAddr:           ":9090",
		SnapshotConcurrency:  32,
		AggregateConcurrency: 16,
		TaskCheckInterval:    10 * time.Millisecond,
		ShutdownTimeout:      25 * time.Second,
		SnapshotMaxRetry:     3,
		LLM: LLM{
			BaseURL:         "https://api.openai.com/v1",
			APIType:         "openai",
			APIVersion:      "2024-06-01",
			Model:           "gpt-4o",
			ExtractionModel: "gpt-4o-mini",
			Timeout:         90 * time.Second,
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadFrom(empty) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestLoadFromOverrides(t *testing.T) {
	t.Parallel()
	got, err := LoadFrom(map[string]string{
		"REDIS_URL":             "rediss://:pw@cache.internal:6380/2",
		"LOG_LEVEL":             "debug",
		"API_ADDR":              "127.0.0.1:18080",
		"JOB_DEADLINE":          "45s",
		"JOB_RETENTION":         "2h",
		"SSE_HEARTBEAT":         "100ms",
		"WORKER_ADDR":           ":19090",
		"SNAPSHOT_CONCURRENCY":  "4",
		"AGGREGATE_CONCURRENCY": "2",
		"TASK_CHECK_INTERVAL":   "1ms",
		"SHUTDOWN_TIMEOUT":      "0s",
		"SNAPSHOT_MAX_RETRY":    "0",
		"OPENAI_BASE_URL":       "http://localhost:11434/v1",
		"OPENAI_API_KEY":        "k",
		"OPENAI_API_TYPE":       "azure",
		"OPENAI_API_VERSION":    "2025-01-01",
		"LLM_MODEL":             "llama3.1:8b",
		"LLM_EXTRACTION_MODEL":  "qwen2.5:3b",
		"LLM_NARRATIVE_MODEL":   "mistral",
		"LLM_TIMEOUT":           "1s",
	})
	if err != nil {
		t.Fatalf("LoadFrom: %v", err)
	}
	want := Config{
		RedisURL:             "rediss://:pw@cache.internal:6380/2",
		LogLevel:             "debug",
		APIAddr:              "127.0.0.1:18080",
		JobDeadline:          45 * time.Second,
		JobRetention:         2 * time.Hour,
		SSEHeartbeat:         100 * time.Millisecond,
		WorkerAddr:           ":19090",
		SnapshotConcurrency:  4,
		AggregateConcurrency: 2,
		TaskCheckInterval:    time.Millisecond,
		ShutdownTimeout:      0,
		SnapshotMaxRetry:     0,
		LLM: LLM{
			BaseURL:         "http://localhost:11434/v1",
			APIKey:          "k",
			APIType:         "azure",
			APIVersion:      "2025-01-01",
			Model:           "llama3.1:8b",
			ExtractionModel: "qwen2.5:3b",
			NarrativeModel:  "mistral",
			Timeout:         time.Second,
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadFrom =\n%+v\nwant\n%+v", got, want)
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
			if got := m["REDIS_URL"]; got != tt.want {
				t.Errorf("RedisURL logged as %v, want %s", got, tt.want)
			}
			if c.RedisURL != tt.url {
				t.Errorf("LogValue changed the config: RedisURL = %q", c.RedisURL)
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
		if got := m["REDIS_URL"]; got != u {
			t.Errorf("RedisURL logged as %v, want it unchanged (%s)", got, u)
		}
	}
}
