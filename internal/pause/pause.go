// Package pause waits for a while unless a context ends first: the one
// wait of the service's retry loops, backoffs and polls.
package pause

import (
	"context"
	"fmt"
	"time"
)

// For waits d, or until ctx ends; then it returns ctx's error, which
// matches both context.Canceled (or DeadlineExceeded) and the context's
// cause (context.Cause) under errors.Is; nil when the wait ran its course.
// A d of 0 or less returns at once.
func For(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ended(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ended(ctx)
	case <-t.C:
		return nil
	}
}

func ended(ctx context.Context) error {
	err := ctx.Err()
	if c := context.Cause(ctx); c != nil && c != err {
		return fmt.Errorf("%w: %w", err, c)
	}
	return err
}
