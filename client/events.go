package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"sync"
	"time"
)

// errIdle is the cause of a stream cancelled for silence.
var errIdle = errors.New("stream idle for too long")

// fnError marks an error returned by the caller's callback, so that it is
// handed back unchanged and never retried.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }
func (e *fnError) Unwrap() error { return e.err }

// streamResult is what one connection to the event stream yielded.
type streamResult struct {
	lastID   string
	retry    time.Duration
	retrySet bool
}

// Events reads job jobID's event stream over one connection
// (GET /api/jobs/{id}/events), starting after lastEventID when it is not
// empty (sent as the Last-Event-ID header) or from the start, and calls fn
// for each event in stream order. Heartbeat comments are skipped.
//
// It returns nil once the terminal job.completed event has been handed to fn
// and fn returned nil, or, without calling fn, when the API answers 204 No
// Content: the stream had ended for the caller at lastEventID already (the
// id of its job.completed event, or of one after it); an error wrapping io.ErrUnexpectedEOF if the stream
// ended or broke before that (including a stream silent for longer than the
// idle timeout); fn's error, unchanged, as soon as fn fails; an *APIError if
// the API refused the request; the context's error if ctx ended. In every
// case lastID is the last event id seen (lastEventID if none), from which a
// later call resumes without repeating an event.
func (c *Client) Events(ctx context.Context, jobID, lastEventID string, fn func(Event) error) (lastID string, err error) {
	res, err := c.stream(ctx, jobID, lastEventID, fn)
	var fe *fnError
	if errors.As(err, &fe) {
		err = fe.err
	}
	return res.lastID, err
}

// Follow reads job jobID's event stream from the start to the terminal
// job.completed event, like Events, and reconnects with the last event id
// when the connection fails or is dropped before the end (connection errors,
// early end of stream, 429 and 5xx answers). Before reconnecting it waits the
// server's "retry:" hint, or the retry delay until the server sent one. It
// gives up after the maximum number of reconnections in a row without an
// event delivered in between, returning the last error.
//
// fn never sees two events with the same id, even if a server replays what
// it already sent. Errors from fn, *APIError 4xx answers (other than 429),
// malformed streams and the end of ctx are returned at once. lastID is the
// last event id seen.
func (c *Client) Follow(ctx context.Context, jobID string, fn func(Event) error) (lastID string, err error) {
	seen := make(map[string]struct{})
	delay := c.retryDelay
	failures := 0
	for {
		progressed := false
		res, err := c.stream(ctx, jobID, lastID, func(ev Event) error {
			if ev.ID != "" {
				if _, dup := seen[ev.ID]; dup {
					return nil
				}
				seen[ev.ID] = struct{}{}
			}
			progressed = true
			return fn(ev)
		})
		lastID = res.lastID
		if res.retrySet {
			delay = res.retry
		}
		if err == nil {
			return lastID, nil
		}
		var fe *fnError
		if errors.As(err, &fe) {
			return lastID, fe.err
		}
		if ctx.Err() != nil {
			// The context ended the follow, whatever the connection did as
			// it went (a drop can be seen before the cancellation).
			if errors.Is(err, ctx.Err()) {
				return lastID, err
			}
			return lastID, fmt.Errorf("client: follow job %s: %w", jobID, ctx.Err())
		}
		if !retryable(err) {
			return lastID, err
		}
		if progressed {
			failures = 0
		}
		failures++
		if failures > c.maxRetries {
			return lastID, fmt.Errorf("client: follow job %s: gave up after %d reconnections: %w", jobID, c.maxRetries, err)
		}
		c.log.LogAttrs(ctx, slog.LevelInfo, "event stream dropped, reconnecting",
			slog.String("job_id", jobID), slog.String("last_event_id", lastID),
			slog.Duration("delay", delay), slog.Int("attempt", failures), slog.Any("error", err))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return lastID, fmt.Errorf("client: follow job %s: %w", jobID, ctx.Err())
		case <-t.C:
		}
	}
}

// retryable reports whether a failed connection is worth another try.
func retryable(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.StatusCode == http.StatusTooManyRequests || ae.StatusCode >= 500
	}
	var ce *connError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ce)
}

// connError is a failure to get a response at all.
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

// stream runs one connection. fn's errors come back as *fnError.
func (c *Client) stream(ctx context.Context, jobID, lastEventID string, fn func(Event) error) (res streamResult, err error) {
	res.lastID = lastEventID
	u, err := c.endpoint(jobPath(jobID) + "/events")
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return res, fmt.Errorf("client: events of job %s: %w", jobID, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	c.authorize(req)
	req.Header.Set("Cache-Control", "no-cache")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}

	var idle *idleWatch
	if c.idleTimeout > 0 {
		idle = newIdleWatch(c.idleTimeout, func() { cancel(errIdle) })
		defer idle.stop()
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && context.Cause(ctx) != errIdle {
			return res, fmt.Errorf("client: events of job %s: %w", jobID, ctxErr)
		}
		return res, fmt.Errorf("client: events of job %s: %w", jobID, &connError{err})
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return res, readAPIError(resp)
	}
	if resp.StatusCode == http.StatusNoContent {
		// A resumption after the terminal event: nothing is left to hand over.
		return res, nil
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return res, fmt.Errorf("client: events of job %s: answer is %q, not text/event-stream", jobID, resp.Header.Get("Content-Type"))
	}

	var body io.Reader = resp.Body
	if idle != nil {
		body = idle.reader(resp.Body)
	}
	p := newSSEParser(body, lastEventID, MaxEventSize)
	defer func() { res.lastID = p.LastID(); res.retry, res.retrySet = p.Retry() }()
	for {
		sev, err := p.Next()
		if err != nil {
			switch {
			case context.Cause(ctx) == errIdle:
				return res, fmt.Errorf("client: events of job %s: no data for %s: %w", jobID, c.idleTimeout, io.ErrUnexpectedEOF)
			case ctx.Err() != nil:
				return res, fmt.Errorf("client: events of job %s: %w", jobID, ctx.Err())
			case errors.Is(err, errTooLarge):
				return res, fmt.Errorf("client: events of job %s: %w", jobID, err)
			case err == io.EOF:
				return res, fmt.Errorf("client: events of job %s: stream closed before %s: %w", jobID, EventJobCompleted, io.ErrUnexpectedEOF)
			default:
				return res, fmt.Errorf("client: events of job %s: %w: %w", jobID, io.ErrUnexpectedEOF, err)
			}
		}
		ev := Event{ID: sev.ID, Name: sev.Type, Data: sev.Data}
		if err := fn(ev); err != nil {
			return res, &fnError{err}
		}
		if ev.Terminal() {
			return res, nil
		}
	}
}

// idleWatch calls fire when no read has returned data for d.
type idleWatch struct {
	mu    sync.Mutex
	t     *time.Timer
	d     time.Duration
	fired bool
}

func newIdleWatch(d time.Duration, fire func()) *idleWatch {
	w := &idleWatch{d: d}
	w.t = time.AfterFunc(d, func() {
		w.mu.Lock()
		w.fired = true
		w.mu.Unlock()
		fire()
	})
	return w
}

func (w *idleWatch) stop() { w.t.Stop() }

func (w *idleWatch) reader(r io.Reader) io.Reader { return idleReader{r, w} }

type idleReader struct {
	r io.Reader
	w *idleWatch
}

func (r idleReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 {
		r.w.mu.Lock()
		if !r.w.fired {
			r.w.t.Reset(r.w.d)
		}
		r.w.mu.Unlock()
	}
	return n, err
}
