package redisx

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"
)

// lockedBuffer is a bytes.Buffer safe for the JSON handler and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON record: %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

func TestLoggerPrintf(t *testing.T) {
	tests := []struct {
		name   string
		level  slog.Level
		ctx    context.Context
		format string
		args   []any
		want   string // msg; "" no record
	}{
		{"formatted", slog.LevelInfo, context.Background(), "redis: connection pool: conn[%d] rejected by hook", []any{7},
			"redis: connection pool: conn[7] rejected by hook"},
		{"trailing newlines dropped", slog.LevelInfo, context.Background(), "pubsub: %s\n\n", []any{"gone"}, "pubsub: gone"},
		{"inner newlines kept", slog.LevelInfo, context.Background(), "panic: %v\n%s", []any{"x", "stack"}, "panic: x\nstack"},
		{"nil context", slog.LevelInfo, nil, "no context", nil, "no context"},
		{"warn is enabled", slog.LevelWarn, context.Background(), "shown", nil, "shown"},
		{"below the handler's level", slog.LevelError, context.Background(), "hidden", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf lockedBuffer
			l := NewLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: tt.level})).With("service", "api"))
			l.Printf(tt.ctx, tt.format, tt.args...)
			recs := buf.records(t)
			if tt.want == "" {
				if len(recs) != 0 {
					t.Fatalf("records %v, want none", recs)
				}
				return
			}
			if len(recs) != 1 {
				t.Fatalf("records %v, want one", recs)
			}
			r := recs[0]
			if r["msg"] != tt.want || r["level"] != "WARN" || r["logger"] != "go-redis" || r["service"] != "api" {
				t.Fatalf("record %v", r)
			}
		})
	}
}

// TestLoggerGoRedis: a line go-redis itself logs reaches the slog logger as
// a JSON record, once the Logger is installed.
func TestLoggerGoRedis(t *testing.T) {
	var buf lockedBuffer
	redis.SetLogger(NewLogger(slog.New(slog.NewJSONHandler(&buf, nil))))
	t.Cleanup(logging.Enable)

	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	// go-redis warns while it builds the command: a pipeline that is never
	// executed makes no connection.
	pipe := rdb.Pipeline()
	pipe.Set(context.Background(), "k", "v", 500*time.Microsecond)
	pipe.Discard()

	for _, r := range buf.records(t) {
		if msg, _ := r["msg"].(string); strings.Contains(msg, "truncating to 1ms") {
			if r["level"] != "WARN" || r["logger"] != "go-redis" || r["time"] == nil {
				t.Fatalf("record %v", r)
			}
			return
		}
	}
	t.Fatalf("no record of go-redis' warning in %v", buf.records(t))
}
