package worker

import (
	"context"
	"time"
)

// WatchDeadlinesObserved is WatchDeadlines calling looked after each look
// with the sleep that follows it.
func (h *Handlers) WatchDeadlinesObserved(ctx context.Context, id string, looked func(time.Duration)) {
	h.watchDeadlines(ctx, id, looked)
}
