package redistest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ScriptCounter is a go-redis hook that counts the Lua scripts (EVAL,
// EVALSHA) a client runs outside pipelines: add it with AddHook, read it
// with Load. Tests use it to see a waiter retry.
type ScriptCounter struct{ n atomic.Int64 }

// Load returns the scripts run so far.
func (c *ScriptCounter) Load() int64 { return c.n.Load() }

// DialHook passes dialling through.
func (c *ScriptCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook counts each script command.
func (c *ScriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook passes pipelines through uncounted.
func (c *ScriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// ScriptWatch is a go-redis hook that signals, after each Lua script
// (EVAL, EVALSHA) a client has run outside pipelines, that the state those
// scripts keep may have changed: a test waits for that state with Until
// instead of sleeping between looks. Add it with AddHook to the client
// whose scripts change the state, not to the one that looks at it.
type ScriptWatch struct{ ran chan struct{} }

// NewScriptWatch returns a ScriptWatch.
func NewScriptWatch() *ScriptWatch { return &ScriptWatch{ran: make(chan struct{}, 1)} }

// DialHook passes dialling through.
func (w *ScriptWatch) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook signals once a script command has its reply.
func (w *ScriptWatch) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			select {
			case w.ran <- struct{}{}:
			default: // a signal is pending already
			}
		}
		return err
	}
}

// ProcessPipelineHook passes pipelines through.
func (w *ScriptWatch) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Until returns once cond holds, looking at it now and after each script
// the watched client runs; it fails t when cond does not hold within
// timeout (what says what was awaited).
func (w *ScriptWatch) Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-w.ran:
		case <-deadline.C:
			if cond() {
				return
			}
			t.Fatalf("%s: not within %s", what, timeout)
		}
	}
}
