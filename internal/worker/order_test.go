package worker

import (
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/limit"
	"github.com/timetravel-ai/timetravel/internal/tasks"
)

func TestMemberOrder(t *testing.T) {
	t.Parallel()
	deadline := time.UnixMilli(1_800_000_000_123)
	tests := []struct {
		name string
		p    tasks.MemberPayload
		want limit.Order
	}{
		{"by its place in the line", tasks.MemberPayload{DeadlineMS: deadline.UnixMilli(), LineMS: deadline.UnixMilli() + 7}, limit.Order{Due: deadline.Add(7 * time.Millisecond)}},
		{"by its job's deadline (queued by an earlier version)", tasks.MemberPayload{DeadlineMS: deadline.UnixMilli()}, limit.Order{Due: deadline}},
		{"warming waits behind", tasks.MemberPayload{DeadlineMS: deadline.UnixMilli(), Warm: true}, limit.Order{}},
		{"no deadline", tasks.MemberPayload{}, limit.Order{}},
	}
	for _, tt := range tests {
		if got := memberOrder(tt.p); !got.Due.Equal(tt.want.Due) || got.Urgent != tt.want.Urgent {
			t.Errorf("%s: memberOrder = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
