package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// defaultAccess is Access with every default.
var defaultAccess = Access{
	EventsTokenTTL: time.Hour, SubmissionsPerMinute: 60, RunningJobs: 16, StoredJobs: 5000,
	TokensPerDay: 2000000, SSEPerKey: 32, MaxStoredJobs: 200000, MaxSSEConnections: 10000,
	ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second,
}

const goodEventsSecret = "0123456789abcdef0123456789abcdef"

func TestAccessValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // empty: valid
		keys    bool
	}{
		{name: "development defaults: keys optional", env: map[string]string{}},
		{name: "production requires keys", env: map[string]string{"ENV": "production", "ADMIN_UI_ENABLED": "false", "EVENTS_TOKEN_SECRET": goodEventsSecret}, keys: true},
		{name: "production cannot turn keys off", env: map[string]string{"ENV": "production", "AUTH_REQUIRED": "false"}, wantErr: "AUTH_REQUIRED"},
		{name: "production needs an events secret", env: map[string]string{"ENV": "production"}, wantErr: "EVENTS_TOKEN_SECRET"},
		{name: "short events secret", env: map[string]string{"AUTH_REQUIRED": "true", "EVENTS_TOKEN_SECRET": "short"}, wantErr: "EVENTS_TOKEN_SECRET"},
		{name: "events secret with white space", env: map[string]string{"EVENTS_TOKEN_SECRET": goodEventsSecret + " x"}, wantErr: "white space"},
		{name: "keys turned on in development", env: map[string]string{"AUTH_REQUIRED": "true", "EVENTS_TOKEN_SECRET": goodEventsSecret}, keys: true},
		{name: "AUTH_REQUIRED not a bool", env: map[string]string{"AUTH_REQUIRED": "maybe"}, wantErr: "AUTH_REQUIRED"},
		{name: "negative quota", env: map[string]string{"QUOTA_RUNNING_JOBS": "-1"}, wantErr: "QUOTA_RUNNING_JOBS"},
		{name: "zero quota is unlimited", env: map[string]string{"QUOTA_SUBMISSIONS_PER_MINUTE": "0"}},
		{name: "read timeout below header timeout", env: map[string]string{"HTTP_READ_TIMEOUT": "5s"}, wantErr: "HTTP_READ_TIMEOUT"},
		{name: "idle timeout too short", env: map[string]string{"HTTP_IDLE_TIMEOUT": "10ms"}, wantErr: "HTTP_IDLE_TIMEOUT"},
		{name: "backlog limit set", env: map[string]string{"MAX_BACKLOG_SECONDS": "30"}},
		{name: "negative backlog limit", env: map[string]string{"MAX_BACKLOG_SECONDS": "-1"}, wantErr: "MAX_BACKLOG_SECONDS"},
		{name: "backlog limit over a day", env: map[string]string{"MAX_BACKLOG_SECONDS": "86401"}, wantErr: "MAX_BACKLOG_SECONDS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := LoadFrom(tt.env)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("LoadFrom: %v", err)
				}
				if c.KeysRequired() != tt.keys {
					t.Errorf("KeysRequired = %v, want %v", c.KeysRequired(), tt.keys)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadFrom error = %v, want one naming %s", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), goodEventsSecret) {
				t.Errorf("error repeats the secret: %v", err)
			}
		})
	}
}

func TestAllowedModels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{name: "default model and its fallbacks", env: map[string]string{"LLM_MODEL": "m1", "LLM_FALLBACKS": "m1=m2|m3,x=y"},
			want: []string{"m1", "m2", "m3"}},
		{name: "explicit list keeps the default", env: map[string]string{"LLM_MODEL": "m1", "LLM_ALLOWED_MODELS": "a, b"},
			want: []string{"a", "b", "m1"}},
		{name: "providers' models", env: map[string]string{"LLM_MODEL": "m1", "LLM_NARRATIVE_MODEL": "n",
			"LLM_PROVIDERS": `[{"name":"p","base_url":"http://p.example/v1","models":["m1","p1"]}]`},
			want: []string{"m1", "n", "p1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := LoadFrom(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.LLM.AllowedModels(); !slices.Equal(got, tt.want) {
				t.Errorf("AllowedModels = %v, want %v", got, tt.want)
			}
			if c.LLM.ModelAllowed("gpt-4-32k") {
				t.Error("an unconfigured model is allowed")
			}
		})
	}
}
