// Package redisx tells Redis being out of reach apart from every other
// error, and waits it out. Work that meets an unavailable Redis is neither
// the provider's failure nor the task's: it must not open a breaker, spend
// a retry budget or use up a queue retry, and it resumes when Redis is back.
package redisx

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Unavailable reports whether err says Redis could not be reached or could
// not serve the command for now, as marked by Hook on the client that met
// it: a refused or reset connection, a closed or exhausted pool, an I/O
// timeout, or a server that is loading its data, is read-only, or has no
// master. Such an error says nothing about the work that met it; trying
// again once Redis is back is the remedy. Errors of other origins (a
// provider's connection reset) are never Unavailable, whatever their text.
func Unavailable(err error) bool {
	var u *unavailableError
	return errors.As(err, &u)
}

// unavailableError marks an error of a Redis client as Redis being out of
// reach.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

// Mark returns err marked Unavailable when it is a connectivity failure
// (see Unavailable); other errors, and nil, come back as they are.
func Mark(err error) error {
	if err == nil || !connectivity(err) {
		return err
	}
	var u *unavailableError
	if errors.As(err, &u) {
		return err
	}
	return &unavailableError{err: err}
}

// connectivity classifies an error a Redis client returned.
func connectivity(err error) bool {
	if errors.Is(err, redis.Nil) || errors.Is(err, redis.TxFailedErr) {
		return false
	}
	if errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY "} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
	}
	return false
}

// Hook marks the connectivity errors of the client it is added to
// (client.AddHook(redisx.Hook{})), on the commands' own errors too, so
// that every caller can tell them with Unavailable.
type Hook struct{}

// DialHook passes dials through.
func (Hook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook marks a command's connectivity error.
func (Hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if marked := Mark(err); marked != err {
			cmd.SetErr(marked)
			return marked
		}
		return err
	}
}

// ProcessPipelineHook marks the connectivity errors of a pipeline's
// commands.
func (Hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			if e := cmd.Err(); e != nil {
				if marked := Mark(e); marked != e {
					cmd.SetErr(marked)
				}
			}
		}
		return Mark(err)
	}
}

// Backoff bounds the waits of Retry.
const (
	firstWait = 50 * time.Millisecond
	maxWait   = time.Second
)

// Retry runs op until it returns an error that is not Unavailable, or ctx
// ends (then it returns op's last error joined with the context's). Waits
// between runs grow from 50 ms to 1 s, so work resumes within about a
// second of Redis coming back. op must be safe to run again: idempotent,
// or fenced by the store.
func Retry(ctx context.Context, op func(context.Context) error) error {
	wait := firstWait
	for {
		err := op(ctx)
		if !Unavailable(err) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(wait*2, maxWait)
	}
}
