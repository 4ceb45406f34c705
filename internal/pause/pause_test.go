package pause_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/pause"
)

func TestFor(t *testing.T) {
	t.Parallel()
	cause := errors.New("job closed")
	ended, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	tests := []struct {
		name string
		ctx  context.Context
		d    time.Duration
		want error
	}{
		{"waits", context.Background(), time.Millisecond, nil},
		{"nothing to wait", context.Background(), 0, nil},
		{"ended: its cause", ended, time.Hour, cause},
		{"ended, nothing to wait: its cause", ended, 0, cause},
	}
	for _, tt := range tests {
		err := pause.For(tt.ctx, tt.d)
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("%s: For = %v, want %v", tt.name, err, tt.want)
		}
		if tt.want != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%s: For = %v, want it to be context.Canceled too", tt.name, err)
		}
	}
}
