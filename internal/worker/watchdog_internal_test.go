package worker

import (
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/store"
)

// The watchdog sleeps until the earliest deadline not yet due, a second at
// most, and never spins.
func TestWatchdogSleep(t *testing.T) {
	now := time.Now()
	at := func(ds ...time.Duration) []store.Deadline {
		out := make([]store.Deadline, len(ds))
		for i, d := range ds {
			out[i] = store.Deadline{JobID: "j", At: now.Add(d)}
		}
		return out
	}
	for _, tt := range []struct {
		name      string
		deadlines []store.Deadline
		limit     int
		failed    bool
		want      time.Duration
	}{
		{name: "no deadlines", limit: 3, want: watchdogMaxSleep},
		{name: "due ones only", deadlines: at(-time.Second, 0), limit: 3, want: watchdogMaxSleep},
		{name: "until the earliest not due", deadlines: at(-time.Second, 300*time.Millisecond, 400*time.Millisecond), limit: 3, want: 300 * time.Millisecond},
		{name: "a second at most", deadlines: at(time.Hour), limit: 3, want: watchdogMaxSleep},
		{name: "no spinning on a deadline about now", deadlines: at(100 * time.Microsecond), limit: 3, want: watchdogMinSleep},
		{name: "a full batch due: more may be", deadlines: at(-2*time.Second, -time.Second, 0), limit: 3, want: watchdogMinSleep},
		{name: "a failed end is retried later", deadlines: at(-time.Second, 10*time.Millisecond), limit: 3, failed: true, want: watchdogRetry},
		{name: "a failed end in a full batch", deadlines: at(-2*time.Second, -time.Second, 0), limit: 3, failed: true, want: watchdogRetry},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := watchdogSleep(tt.deadlines, tt.limit, now, now, tt.failed); got != tt.want {
				t.Fatalf("sleep %s, want %s", got, tt.want)
			}
		})
	}
}
