package ttctl

import (
	"bytes"
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/auth"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// redisEnv returns a getenv that gives url as REDIS_URL.
func redisEnv(url string) func(string) string {
	return func(k string) string {
		if k == "REDIS_URL" {
			return url
		}
		return ""
	}
}

// keysCmd runs `ttctl keys args…` against db.
func keysCmd(t *testing.T, db redistest.DB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(t.Context(), append([]string{"keys"}, args...), redisEnv(db.URL), &out, &errOut)
	return code, out.String(), errOut.String()
}

var createdKey = regexp.MustCompile(`(?m)^  (ttk_[0-9a-f]{16}_[A-Za-z0-9_-]{43})$`)

// create runs `ttctl keys create` and returns the key it printed.
func create(t *testing.T, db redistest.DB, args ...string) (key, id string) {
	t.Helper()
	code, out, errOut := keysCmd(t, db, append([]string{"create"}, args...)...)
	if code != ExitOK {
		t.Fatalf("keys create %q: exit %d\n%s%s", args, code, out, errOut)
	}
	m := createdKey.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("keys create printed no key:\n%s", out)
	}
	return m[1], m[1][4:20]
}

func TestKeysCreate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string
		code   int
		limits auth.Limits
		stdout []string
		stderr []string
	}{
		{name: "name only", args: []string{"-name", "ci bot"},
			stdout: []string{"ci bot", "will not be shown again", "ID: "}},
		{name: "limits", args: []string{"-name", "big", "-submissions-per-minute", "5", "-running-jobs", "2",
			"-stored-jobs", "100", "-sse-connections", "3", "-tokens-per-day", "5000000000"},
			limits: auth.Limits{SubmissionsPerMinute: 5, RunningJobs: 2, StoredJobs: 100, SSEConnections: 3, TokensPerDay: 5_000_000_000}},
		{name: "no name", args: []string{"-running-jobs", "2"}, code: ExitUsage, stderr: []string{"-name is required"}},
		{name: "blank name", args: []string{"-name", "  "}, code: ExitUsage, stderr: []string{"invalid API key name"}},
		{name: "name as an argument", args: []string{"bot"}, code: ExitUsage, stderr: []string{"-name"}},
		{name: "negative limit", args: []string{"-name", "x", "-stored-jobs", "-1"}, code: ExitUsage,
			stderr: []string{"stored_jobs must not be negative"}},
		{name: "not a number", args: []string{"-name", "x", "-stored-jobs", "many"}, code: ExitUsage,
			stderr: []string{"invalid value"}},
		{name: "unknown flag", args: []string{"-name", "x", "-nope"}, code: ExitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := redistest.New(t)
			code, out, errOut := keysCmd(t, db, append([]string{"create"}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out, errOut)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			if code != ExitOK {
				if n := db.Client.DBSize(t.Context()).Val(); n != 0 {
					t.Errorf("a refused create left %d Redis keys", n)
				}
				return
			}
			m := createdKey.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no key in:\n%s", out)
			}
			k, err := auth.New(db.Client).Verify(t.Context(), m[1])
			if err != nil {
				t.Fatalf("the printed key does not verify: %v", err)
			}
			if !strings.Contains(out, "ID: "+k.ID+"\n") || k.Limits != tt.limits {
				t.Errorf("key %+v; output:\n%s", k, out)
			}
		})
	}
}

func TestKeysList(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	if code, out, errOut := keysCmd(t, db, "list"); code != ExitOK || out != "No API keys.\n" {
		t.Fatalf("list of none: exit %d\n%s%s", code, out, errOut)
	}
	_, liveID := create(t, db, "-name", "live one", "-running-jobs", "3")
	_, revokedID := create(t, db, "-name", "old", "-tokens-per-day", "1000")
	if code, out, errOut := keysCmd(t, db, "revoke", revokedID); code != ExitOK || out != "Revoked API key "+revokedID+".\n" {
		t.Fatalf("revoke: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := keysCmd(t, db, "list")
	if code != ExitOK {
		t.Fatalf("list: exit %d\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("list printed %d lines, want a header and 2 keys:\n%s", len(lines), out)
	}
	want := map[string][]string{
		liveID:    {"live one", "live", "3"},
		revokedID: {"old", "revoked", "1000"},
	}
	header := strings.Fields(lines[0])
	if strings.Join(header, " ") != "ID NAME CREATED STATUS SUBMISSIONS/MIN RUNNING STORED SSE TOKENS/DAY" {
		t.Errorf("header %q", lines[0])
	}
	for _, line := range lines[1:] {
		id := strings.Fields(line)[0]
		if want[id] == nil {
			t.Errorf("unexpected row %q", line)
			continue
		}
		for _, w := range want[id] {
			if !strings.Contains(line, w) {
				t.Errorf("row %q lacks %q", line, w)
			}
		}
		delete(want, id)
	}
	if len(want) > 0 {
		t.Errorf("rows missing for %v:\n%s", want, out)
	}
	// The limits columns, "default" for 0.
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		limits := strings.Join(f[len(f)-5:], " ")
		switch f[0] {
		case liveID:
			if limits != "default 3 default default default" || f[len(f)-6] != "live" {
				t.Errorf("live row %q", line)
			}
		case revokedID:
			if limits != "default default default default 1000" || f[len(f)-6] != "revoked" {
				t.Errorf("revoked row %q", line)
			}
		}
	}
	if code, _, errOut := keysCmd(t, db, "list", "extra"); code != ExitUsage || errOut == "" {
		t.Errorf("list with an argument: exit %d", code)
	}
}

func TestKeysRevoke(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	key, id := create(t, db, "-name", "n")
	byKey, byKeyID := create(t, db, "-name", "revoked by key")
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"revoke", []string{id}, ExitOK, "Revoked API key " + id + ".\n", ""},
		{"again", []string{id}, ExitOK, "Revoked API key " + id + ".\n", ""},
		{"by the whole key", []string{byKey}, ExitOK, "Revoked API key " + byKeyID + ".\n", ""},
		{"unknown", []string{"0000000000000000"}, ExitUsage, "", "no API key has the id 0000000000000000"},
		{"not an id", []string{"nope"}, ExitUsage, "", "a key id is 16 lowercase hex digits"},
		{"upper-case id", []string{strings.ToUpper(id)}, ExitUsage, "", "a key id is 16 lowercase hex digits"},
		{"no id", nil, ExitUsage, "", "give one key id"},
		{"two ids", []string{id, id}, ExitUsage, "", "give one key id"},
	}
	for _, tt := range tests { // in order: "again" follows "revoke"
		code, out, errOut := keysCmd(t, db, append([]string{"revoke"}, tt.args...)...)
		if code != tt.code || out != tt.stdout || !strings.Contains(errOut, tt.stderr) {
			t.Errorf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", tt.name, code, out, errOut)
		}
	}
	for _, k := range []string{key, byKey} {
		if _, err := auth.New(db.Client).Verify(t.Context(), k); !errors.Is(err, auth.ErrRevoked) {
			t.Errorf("Verify of a revoked key: %v", err)
		}
	}
	// A mistyped key is not repeated on the terminal.
	bad := byKey[:63] + "!"
	if code, _, errOut := keysCmd(t, db, "revoke", bad); code != ExitUsage || strings.Contains(errOut, bad[21:]) {
		t.Errorf("revoke of a mistyped key: exit %d, stderr %s", code, errOut)
	}
}

func TestKeysLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string // after "limits"; ID stands for the key's id
		code   int
		want   auth.Limits
		stdout []string
		stderr string
	}{
		{name: "show", args: []string{"ID"}, want: auth.Limits{RunningJobs: 2, TokensPerDay: 7},
			stdout: []string{"Limits of API key ", "  running jobs            2\n", "  stored jobs             default\n", "  tokens per day          7\n"}},
		{name: "set some", args: []string{"ID", "-stored-jobs", "50", "-sse-connections", "4"},
			want:   auth.Limits{RunningJobs: 2, StoredJobs: 50, SSEConnections: 4, TokensPerDay: 7},
			stdout: []string{" set:\n", "stored jobs             50\n", "running jobs            2\n"}},
		{name: "back to default", args: []string{"ID", "-running-jobs", "0"}, want: auth.Limits{TokensPerDay: 7},
			stdout: []string{"running jobs            default\n"}},
		{name: "flags around the id", args: []string{"-submissions-per-minute", "9", "ID", "-sse-connections", "1"},
			want: auth.Limits{SubmissionsPerMinute: 9, RunningJobs: 2, SSEConnections: 1, TokensPerDay: 7}},
		{name: "flags before the id", args: []string{"-submissions-per-minute", "9", "ID"}, want: auth.Limits{SubmissionsPerMinute: 9, RunningJobs: 2, TokensPerDay: 7}},
		{name: "no id", args: []string{"-running-jobs", "1"}, code: ExitUsage,
			want: auth.Limits{RunningJobs: 2, TokensPerDay: 7}, stderr: "give one key id"},
		{name: "negative", args: []string{"ID", "-tokens-per-day", "-1"}, code: ExitUsage,
			want: auth.Limits{RunningJobs: 2, TokensPerDay: 7}, stderr: "tokens_per_day must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := redistest.New(t)
			key, id := create(t, db, "-name", "n", "-running-jobs", "2", "-tokens-per-day", "7")
			args := []string{"limits"}
			for _, a := range tt.args {
				if a == "ID" {
					a = id
				}
				args = append(args, a)
			}
			code, out, errOut := keysCmd(t, db, args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out, errOut)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			k, err := auth.New(db.Client).Verify(t.Context(), key)
			if err != nil || k.Limits != tt.want {
				t.Errorf("limits %+v, %v; want %+v", k.Limits, err, tt.want)
			}
		})
	}
	db := redistest.New(t)
	if code, _, errOut := keysCmd(t, db, "limits", "0000000000000000", "-running-jobs", "1"); code != ExitUsage || !strings.Contains(errOut, "no API key has the id") {
		t.Errorf("limits of an unknown key: exit %d, %s", code, errOut)
	}
	if n := db.Client.DBSize(t.Context()).Val(); n != 0 {
		t.Errorf("limits of an unknown key left %d Redis keys", n)
	}
}

func TestKeysUsageAndRedis(t *testing.T) {
	t.Parallel()
	// A port nobody listens on: taken, then given back.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "redis://" + l.Addr().String() + "/0"
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		redisURL string
		code     int
		stdout   string
		stderr   string
	}{
		{name: "no subcommand", code: ExitUsage, stderr: "ttctl keys create -name NAME"},
		{name: "help", args: []string{"help"}, code: ExitOK, stdout: "ttctl keys revoke ID"},
		{name: "unknown subcommand", args: []string{"delete"}, code: ExitUsage, stderr: `unknown command "delete"`},
		{name: "bad REDIS_URL", args: []string{"list"}, redisURL: "http://example.invalid", code: ExitUsage, stderr: "REDIS_URL"},
		{name: "Redis down, list", args: []string{"list"}, redisURL: closed, code: ExitUsage, stderr: "ttctl keys list: list API keys:"},
		{name: "Redis down, create", args: []string{"create", "-name", "x"}, redisURL: closed, code: ExitUsage, stderr: "ttctl keys create: create API key:"},
		{name: "Redis down, bad usage first", args: []string{"create"}, redisURL: closed, code: ExitUsage, stderr: "-name is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			code := Main(t.Context(), append([]string{"keys"}, tt.args...), redisEnv(tt.redisURL), &out, &errOut)
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errOut.String(), tt.stderr) {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out.String(), errOut.String())
			}
		})
	}
	var out bytes.Buffer
	if code := Main(t.Context(), []string{"help"}, noEnv, &out, &out); code != ExitOK || !strings.Contains(out.String(), "ttctl keys") {
		t.Errorf("ttctl help does not mention keys:\n%s", out.String())
	}
}

// `ttctl keys` reaches the service's Redis by the service's variables, on
// every topology: a key created through a Sentinel group or a Cluster is
// listed, and stored where the service (auth.New on the same topology)
// finds it.
func TestKeysOnTopologies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		start func(t *testing.T) map[string]string
	}{
		{"sentinel", func(t *testing.T) map[string]string {
			g := redistest.Sentinel(t)
			return map[string]string{"REDIS_SENTINEL_MASTER": g.MasterName, "REDIS_SENTINEL_ADDRS": strings.Join(g.SentinelAddrs, ",")}
		}},
		{"cluster", func(t *testing.T) map[string]string {
			c := redistest.Cluster(t)
			var seeds []string
			for _, m := range c.Masters() {
				seeds = append(seeds, m.Addr)
			}
			return map[string]string{"REDIS_CLUSTER_ADDRS": strings.Join(seeds, ",")}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vars := tt.start(t)
			run := func(args ...string) (int, string, string) {
				var out, errOut bytes.Buffer
				code := Main(t.Context(), append([]string{"keys"}, args...), func(k string) string { return vars[k] }, &out, &errOut)
				return code, out.String(), errOut.String()
			}
			code, out, errOut := run("create", "-name", "on "+tt.name)
			if code != ExitOK {
				t.Fatalf("keys create: exit %d\n%s%s", code, out, errOut)
			}
			m := createdKey.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("keys create printed no key:\n%s", out)
			}
			cfg, err := config.LoadRedis(func(k string) string { return vars[k] })
			if err != nil {
				t.Fatal(err)
			}
			rdb, err := redisx.NewClient(cfg, "ttctl-test", 2, false)
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			if _, err := auth.New(rdb).Verify(t.Context(), m[1]); err != nil {
				t.Errorf("the service does not find the key: %v", err)
			}
			code, out, errOut = run("list")
			if code != ExitOK || !strings.Contains(out, "on "+tt.name) {
				t.Errorf("keys list: exit %d\n%s%s", code, out, errOut)
			}
		})
	}
}
