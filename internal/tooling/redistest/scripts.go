package redistest

import (
	"context"
	"sync/atomic"

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
