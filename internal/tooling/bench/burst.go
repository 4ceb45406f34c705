package bench

import (
	"context"
	"sync"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

// burstJob is how one job of a burst went. Times are offsets from the
// burst's start (its first submission).
type burstJob struct {
	id                                  string
	submitted, accepted, firstText, end time.Duration
	sawText, ended                      bool
	status                              string
	// expectedWait is the job.accepted event's expected_wait_ms; nil when
	// the server sent none.
	expectedWait *time.Duration
	err          error
}

// total is the job's latency, from its submission to its terminal event.
func (j burstJob) total() time.Duration { return j.end - j.submitted }

// submitBurst submits jobs jobs at once (the question of job i is
// question(i)) and follows each over SSE to its terminal event; then, when
// after is not nil, calls it for each job that ended without error (a
// failure of after is the job's error). It returns the jobs, in submission
// index order, and the time from the first submission to the return.
func submitBurst(ctx context.Context, svc *Service, jobs int, question func(int) string,
	after func(ctx context.Context, j *burstJob) error) ([]burstJob, time.Duration) {
	results := make([]burstJob, jobs)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range jobs {
		wg.Go(func() {
			j := &results[i]
			j.submitted = time.Since(start)
			acc, err := svc.API.Submit(ctx, client.SubmitRequest{Question: question(i)})
			if err != nil {
				j.err = err
				return
			}
			j.id, j.accepted = acc.JobID, time.Since(start)
			_, err = svc.API.Events(ctx, acc.JobID, "", func(ev client.Event) error {
				switch {
				case ev.Name == client.EventJobAccepted:
					var d client.JobAcceptedData
					if ev.Decode(&d) == nil {
						if d.ExpectedWaitMS != nil {
							w := time.Duration(*d.ExpectedWaitMS) * time.Millisecond
							j.expectedWait = &w
						}
					}
				case ev.Name == client.EventSnapshotDelta && !j.sawText:
					j.firstText, j.sawText = time.Since(start), true
				case ev.Terminal():
					j.end, j.ended = time.Since(start), true
					var d client.JobCompletedData
					_ = ev.Decode(&d)
					j.status = string(d.Status)
				}
				return nil
			})
			if err != nil {
				j.err = err
				return
			}
			if after != nil {
				j.err = after(ctx, j)
			}
		})
	}
	wg.Wait()
	return results, time.Since(start)
}
