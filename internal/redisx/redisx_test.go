package redisx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

func TestUnavailable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"redis.Nil", redis.Nil, false},
		{"wrapped redis.Nil", fmt.Errorf("get: %w", redis.Nil), false},
		{"closed client", redis.ErrClosed, true},
		{"pool timeout", fmt.Errorf("x: %w", redis.ErrPoolTimeout), true},
		{"eof", io.EOF, true},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"loading", redisErr("LOADING Redis is loading the dataset in memory"), true},
		{"readonly", redisErr("READONLY You can't write against a read only replica."), true},
		{"script error", redisErr("ERR Error running script"), false},
		{"wrongtype", redisErr("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		{"other", errors.New("job not found"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if Unavailable(tt.err) {
				t.Fatalf("Unavailable(%v) without the client's mark", tt.err)
			}
			if got := Unavailable(fmt.Errorf("op: %w", Mark(tt.err))); got != tt.want {
				t.Fatalf("Unavailable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// The hook marks what a real client meets when Redis is gone, and only
// that.
func TestHookMarksAClosedServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	c.AddHook(Hook{})
	err = c.Set(context.Background(), "k", "v", 0).Err()
	if !Unavailable(err) {
		t.Fatalf("Set on a closed port: %v, not marked Unavailable", err)
	}
	if Unavailable(fmt.Errorf("provider: %w", io.ErrUnexpectedEOF)) {
		t.Fatal("an unmarked EOF counts as Redis")
	}
}

func TestRetryStopsOnOtherErrors(t *testing.T) {
	calls := 0
	want := errors.New("not found")
	err := Retry(context.Background(), func(context.Context) error {
		calls++
		if calls < 3 {
			return Mark(redis.ErrClosed)
		}
		return want
	})
	if !errors.Is(err, want) || calls != 3 {
		t.Fatalf("Retry = %v after %d calls, want %v after 3", err, calls, want)
	}
}

func TestRetryEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Retry(ctx, func(context.Context) error {
		calls++
		cancel()
		return Mark(redis.ErrClosed)
	})
	if !errors.Is(err, redis.ErrClosed) || !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("Retry = %v after %d calls", err, calls)
	}
}
