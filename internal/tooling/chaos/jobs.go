package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

// trackedJob is one job the suite submitted and what became of it.
type trackedJob struct {
	Token int
	ID    string
	// Replica is the api replica that accepted it; Attempts counts the
	// POSTs it took (more than one when a replica failed).
	Replica  int
	Attempts int
	// Replayed: the answer was an earlier POST's job (same Idempotency-Key)
	// whose answer never arrived.
	Replayed bool
	// Submitted is when the first POST was sent, Accepted when one was
	// answered 2xx.
	Submitted time.Time
	Accepted  time.Time

	// Filled by collect.
	Status   string
	Lost     bool // 404 at the check: the job's data is gone
	Deadline time.Time
	Finished time.Time // zero while not ended
	Checked  time.Time // when the stuck check read it
	Stuck    bool
	// Errors are the job's errors as GET shows them.
	Errors []string
	Events []client.Event
	Audit  Audit
	// ReadErr is why the stream could not be read whole, if so.
	ReadErr string

	live *liveRecord
}

// jobSet holds a scenario's jobs. Tokens are unique within the process,
// so that no two jobs of a run share a question.
type jobSet struct {
	mu      sync.Mutex
	list    []*trackedJob
	byToken map[int]*trackedJob
	// postErrors counts POSTs abandoned after their retries, by error.
	postErrors map[string]int
}

var nextToken atomic.Int64

func newJobSet() *jobSet {
	return &jobSet{byToken: map[int]*trackedJob{}, postErrors: map[string]int{}}
}

func (s *jobSet) add(j *trackedJob) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, j)
	s.byToken[j.Token] = j
}

func (s *jobSet) all() []*trackedJob {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*trackedJob(nil), s.list...)
}

// byTokens returns the jobs of the given tokens that were accepted.
func (s *jobSet) byTokens(tokens map[int]bool) []*trackedJob {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*trackedJob
	for _, j := range s.list {
		if tokens[j.Token] {
			out = append(out, j)
		}
	}
	return out
}

// byIDs returns the jobs whose id is in ids, except those in not.
func (s *jobSet) byIDs(ids map[string]bool, not []*trackedJob) []*trackedJob {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*trackedJob
	for _, j := range s.list {
		if ids[j.ID] && !slices.Contains(not, j) {
			out = append(out, j)
		}
	}
	return out
}

func (s *jobSet) postFailed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120] + "…"
	}
	s.postErrors[msg]++
}

// postRetryFor bounds how long one submission keeps retrying.
const postRetryFor = 20 * time.Second

// submit POSTs one job to replica first, and on a failure that another
// try may cure (no answer, 5xx, 429, a key still in progress) retries on
// the next live replica with the same Idempotency-Key, so that a job the
// failed replica created is answered rather than made twice.
func (c *cluster) submit(ctx context.Context, first int) (*trackedJob, error) {
	tok := int(nextToken.Add(1))
	req := client.SubmitRequest{Question: question(tok), IdempotencyKey: "chaos-" + strconv.Itoa(tok)}
	submitted := time.Now()
	giveUp := submitted.Add(postRetryFor)
	r := first % len(c.apis)
	for attempt := 1; ; attempt++ {
		acc, err := c.apis[r].Submit(ctx, req)
		if err == nil {
			j := &trackedJob{Token: tok, ID: acc.JobID, Replica: r, Attempts: attempt, Replayed: acc.Replayed,
				Submitted: submitted, Accepted: time.Now()}
			c.jobs.add(j)
			return j, nil
		}
		if !retryablePost(err) || time.Now().After(giveUp) || ctx.Err() != nil {
			c.jobs.postFailed(err)
			return nil, err
		}
		if alive := c.alive(); len(alive) > 0 {
			r = nextAlive(alive, r)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(min(attempt, 5)) * 100 * time.Millisecond):
		}
	}
}

// nextAlive returns the live replica after r, round the ring.
func nextAlive(alive []int, r int) int {
	for _, a := range alive {
		if a > r {
			return a
		}
	}
	return alive[0]
}

func retryablePost(err error) bool {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.StatusCode >= 500 || ae.StatusCode == http.StatusTooManyRequests ||
			ae.Code == "idempotency_key_in_progress"
	}
	return true // no answer at all
}

// submitBurst submits n jobs from conc concurrent clients, client k
// starting on replica k mod 2 and pausing gap between its POSTs; each
// accepted job is handed to onAccept (if not nil) as soon as it is.
// Submissions that fail for good are counted, not returned as errors.
func (c *cluster) submitBurst(ctx context.Context, n, conc int, gap time.Duration, onAccept func(*trackedJob)) {
	var next, ok atomic.Int64
	var wg sync.WaitGroup
	for k := range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				if j, err := c.submit(ctx, k); err == nil {
					ok.Add(1)
					if onAccept != nil {
						onAccept(j)
					}
				}
				if gap > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(gap):
					}
				}
			}
		})
	}
	wg.Wait()
	c.log.printf("submitted: %d accepted of %d", ok.Load(), n)
}

// liveRecord is what a live reader of one job's stream received.
type liveRecord struct {
	mu         sync.Mutex
	events     []client.Event
	reconnects int
	done       bool   // got job.completed
	lastErr    string // the last error that made it reconnect
	gone       bool   // 404: the job's data is gone
}

// follow reads job j's events live from the start, as a browser would,
// until job.completed or the end of the readers' context: on any failure it
// reconnects through the next replica with the last event id it got. It
// keeps every event it is sent, duplicates included, so that exactness
// can be judged.
func (c *cluster) follow(j *trackedJob) {
	rec := &liveRecord{}
	j.live = rec
	c.readers.Go(func() {
		ctx := c.readerCtx
		r := j.Replica
		last := ""
		for ctx.Err() == nil {
			id, err := c.apis[r].Events(ctx, j.ID, last, func(ev client.Event) error {
				rec.mu.Lock()
				rec.events = append(rec.events, ev)
				rec.mu.Unlock()
				return nil
			})
			last = id
			if err == nil {
				rec.mu.Lock()
				rec.done = true
				rec.mu.Unlock()
				return
			}
			if client.IsCode(err, "job_not_found") {
				rec.mu.Lock()
				rec.gone = true
				rec.mu.Unlock()
				return
			}
			if ctx.Err() != nil {
				return
			}
			rec.mu.Lock()
			rec.reconnects++
			rec.lastErr = err.Error()
			rec.mu.Unlock()
			if alive := c.alive(); len(alive) > 0 {
				r = nextAlive(alive, r)
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	})
}

// getJob reads a job through the live replicas, retrying for a while: the
// check comes after the fault, but a replica may have just died.
func (c *cluster) getJob(ctx context.Context, id string) (client.JobView, error) {
	var lastErr error
	for attempt := range 10 {
		for _, r := range c.alive() {
			v, err := c.apis[r].Job(ctx, id)
			if err == nil || client.IsCode(err, "job_not_found") {
				return v, err
			}
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return client.JobView{}, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
	if lastErr == nil {
		lastErr = errors.New("no api replica alive")
	}
	return client.JobView{}, lastErr
}

// each runs fn over the jobs, 16 at a time.
func each(jobs []*trackedJob, fn func(*trackedJob)) {
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, j := range jobs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(j)
		})
	}
	wg.Wait()
}

// readJob reads j's state into it.
func (c *cluster) readJob(ctx context.Context, j *trackedJob) {
	v, err := c.getJob(ctx, j.ID)
	j.Checked = time.Now()
	switch {
	case client.IsCode(err, "job_not_found"):
		j.Lost, j.Status = true, ""
	case err != nil:
		j.Lost, j.Status = false, "unknown ("+err.Error()+")"
	default:
		j.Lost, j.Status = false, string(v.Status)
		if !v.Deadline.IsZero() {
			j.Deadline = v.Deadline
		}
		if v.FinishedAt != nil {
			j.Finished = *v.FinishedAt
		}
		j.Errors = v.Errors
	}
}

// collect ends a scenario's observation: it reads every job, waits until
// the last deadline plus the grace second has passed, reads every job again
// (the stuck check), stops the live readers, waits for the queues to settle
// and reads every job's whole stream.
func (c *cluster) collect(ctx context.Context) {
	jobs := c.jobs.all()
	each(jobs, func(j *trackedJob) {
		j.Deadline = j.Accepted.Add(c.cfg.Deadline) // unless the job says
		c.readJob(ctx, j)
	})
	var last time.Time
	for _, j := range jobs {
		if j.Deadline.After(last) {
			last = j.Deadline
		}
	}
	if wait := time.Until(last.Add(stuckGrace + 100*time.Millisecond)); wait > 0 {
		c.log.printf("waiting %.0f s for the last deadline + %s", wait.Seconds(), stuckGrace)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	each(jobs, func(j *trackedJob) {
		c.readJob(ctx, j)
		j.Stuck = isStuck(j.Status, j.Lost, j.Deadline, j.Checked)
	})
	c.stopRead()
	c.readers.Wait()

	until := time.Now().Add(10 * time.Second)
	if f := c.faultTime(); !f.IsZero() {
		until = f.Add(c.cfg.Settle)
	}
	c.log.printf("stuck check done; %s", c.settle(ctx, until))
	each(jobs, func(j *trackedJob) {
		if j.Lost {
			return
		}
		limit := 20 * time.Second
		if j.Stuck {
			limit = 3 * time.Second // it follows live: take what is there
		}
		rctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		evs, err := c.replay(rctx, j.ID)
		j.Events = evs
		if err != nil && !(j.Stuck && errors.Is(err, context.DeadlineExceeded)) {
			j.ReadErr = err.Error()
		}
		j.Audit = auditEvents(evs)
	})
}

// replay reads a job's whole stream from the start, including anything
// after a job.completed that leads to another one: the client stops at a
// terminal event, so the read resumes after each one until the api closes
// the stream of the ended job, or answers 204 (nothing after the last
// terminal event; the api hands a resuming client nothing else).
// A resumed read that the api keeps open (it takes the job for running
// again) ends after afterTerminal with what it got.
func (c *cluster) replay(ctx context.Context, id string) ([]client.Event, error) {
	const afterTerminal = 5 * time.Second
	var evs []client.Event
	last := ""
	for round := range 20 {
		alive := c.alive()
		if len(alive) == 0 {
			return evs, errors.New("no api replica alive")
		}
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if round > 0 {
			rctx, cancel = context.WithTimeout(ctx, afterTerminal)
		}
		next, err := c.apis[alive[0]].Events(rctx, id, last, func(ev client.Event) error {
			evs = append(evs, ev)
			return nil
		})
		cancel()
		switch {
		case err == nil && round > 0 && next == last:
			return evs, nil // 204: nothing after the last terminal event
		case err == nil:
			last = next
			continue
		case errors.Is(err, io.ErrUnexpectedEOF) && strings.Contains(err.Error(), "stream closed"):
			return evs, nil // the api replayed all of an ended job and closed
		case round > 0 && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			return evs, fmt.Errorf("the stream stayed open after job.completed: %w", err)
		}
		return evs, err
	}
	return evs, fmt.Errorf("more than 20 job.completed events in the stream of %s", id)
}

// waitEnd follows j's stream until job.completed, reconnecting through the
// live replicas, and returns the job's status and when the terminal event
// arrived; it gives up after limit.
func (c *cluster) waitEnd(ctx context.Context, j *trackedJob, limit time.Duration) (string, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	r, last := j.Replica, ""
	for {
		var status string
		var at time.Time
		id, err := c.apis[r].Events(ctx, j.ID, last, func(ev client.Event) error {
			if ev.Terminal() {
				at = time.Now()
				var d client.JobCompletedData
				if err := ev.Decode(&d); err != nil {
					return err
				}
				status = string(d.Status)
			}
			return nil
		})
		last = id
		if err == nil {
			return status, at, nil
		}
		if ctx.Err() != nil || client.IsCode(err, "job_not_found") {
			return "", time.Time{}, fmt.Errorf("job %s: %w", j.ID, err)
		}
		if alive := c.alive(); len(alive) > 0 {
			r = nextAlive(alive, r)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}
