package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// A job whose deadline passes while the watchdog sleeps is ended: one
// created with a deadline earlier than any the watchdog saw (it wakes
// within a second), and one whose deadline the watchdog saw coming (it
// sleeps until it).
func TestWatchdogEndsAJobDueWhileItSleeps(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		deadline time.Duration
	}{
		{name: "deadline before the watchdog wakes", deadline: 300 * time.Millisecond},
		{name: "deadline after the watchdog wakes", deadline: 1500 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			hs := newHarness(t, options{noServers: true})
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			sleeps := make(chan time.Duration, 1)
			go hs.h.WatchDeadlinesObserved(ctx, "watchdog", func(wait time.Duration) {
				select {
				case sleeps <- wait:
				default:
				}
			})
			<-sleeps // its first look found nothing: the watchdog sleeps
			j := newJob(t, []string{"2023-01-01", "2024-01-01"}, tt.deadline)
			hs.submitJob(j)
			evs := hs.follow(j.ID, time.Minute)
			got := hs.job(j.ID)
			wantEnded(t, evs, got, job.StatusFailed) // no member ran
			// Redis keeps deadlines and end times in milliseconds.
			if got.FinishedAt.Before(j.Deadline.Truncate(time.Millisecond)) {
				t.Fatalf("ended at %s, before its deadline %s", got.FinishedAt, j.Deadline)
			}
		})
	}
}
