package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/store"
)

// retryHintMS is the reconnect delay suggested to SSE clients.
const retryHintMS = 2000

func (s *Server) streamEvents(c *gin.Context) {
	if _, ok := jobID(c); !ok {
		return
	}
	after := c.GetHeader("Last-Event-ID")
	field := "Last-Event-ID"
	if after == "" {
		after, field = c.Query("last_event_id"), "last_event_id"
	}
	if after != "" && !events.ValidID(after) {
		abort(c, http.StatusBadRequest, CodeInvalidField, field, "%s must be an event id such as 1732590000000-0", field)
		return
	}
	h, ok := s.headOf(c)
	if !ok {
		return
	}
	// A stream that has ended for this caller answers its resumption 204
	// (an EventSource then stops, instead of reconnecting for ever); an id
	// past the stream's end is the client's mistake.
	var ended []events.Event // an ended job's events after the client's id
	if h.Status.Terminal() {
		all, err := s.store.Events(c.Request.Context(), h.Work, "")
		if err != nil {
			s.log.Warn("read events of ended job", "job_id", h.ID, "err", err)
			abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not read the job's events; try again")
			return
		}
		if after != "" && (len(all) == 0 || events.Before(all[len(all)-1].ID, after)) {
			abort(c, http.StatusBadRequest, CodeInvalidField, field, "%s %s is past the job's last event", field, after)
			return
		}
		ended = eventsAfter(all, after)
		if after != "" && !reachesEnd(h, ended) {
			c.Status(http.StatusNoContent)
			return
		}
	} else if after != "" {
		last, err := s.store.LastEventID(c.Request.Context(), h.Work)
		if err != nil {
			s.log.Warn("read the last event id", "job_id", h.ID, "err", err)
			abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not read the job's events; try again")
			return
		}
		if last == "" || events.Before(last, after) {
			abort(c, http.StatusBadRequest, CodeInvalidField, field, "%s %s is past the job's last event", field, after)
			return
		}
	}

	who := callerOf(c)
	perOwner := who.limits.SSEConnections
	if who.admin {
		perOwner = 0
	}
	release, d := s.conns.Acquire(who.owner, perOwner)
	if !d.Allowed {
		tooMany(c, d)
		return
	}
	defer release()

	hd := c.Writer.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("Connection", "keep-alive")
	hd.Set("X-Accel-Buffering", "no")
	// The server's ReadTimeout bounds reading requests; a stream is a
	// response that lasts, and must not be cut by it.
	_ = http.NewResponseController(c.Writer).SetReadDeadline(time.Time{})
	c.Status(http.StatusOK)
	w := c.Writer
	if _, err := w.WriteString("retry: " + strconv.Itoa(retryHintMS) + "\n\n"); err != nil {
		return
	}
	w.Flush()

	// End the stream when the client goes or the api shuts down; a client
	// resumes from its Last-Event-ID on another replica.
	ctx, cancel := context.WithCancel(c.Request.Context())
	defer cancel()
	defer context.AfterFunc(s.drain, cancel)()

	emit := s.seenBy(h, func(e events.Event) error {
		if _, err := w.Write(frame(e)); err != nil {
			return err
		}
		w.Flush()
		return nil
	})
	var err error
	if h.Status.Terminal() {
		// An ended job's stream only grows by webhook events, which come
		// after the terminal one: replay what is there and close.
		for _, e := range ended {
			if err = emit(e); err != nil {
				break
			}
		}
	} else {
		err = s.hub.Follow(ctx, h.Work, emit, events.FollowOptions{
			After:     after,
			Heartbeat: s.cfg.SSEHeartbeat,
			Idle: func() error {
				if _, err := w.WriteString(": ping\n\n"); err != nil {
					return err
				}
				w.Flush()
				return nil
			},
		})
	}
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, errStreamEnded) {
		s.log.Warn("event stream ended early", "job_id", h.ID, "err", err)
	}
}

// eventsAfter returns the events of evs after the id after (all when
// empty).
func eventsAfter(evs []events.Event, after string) []events.Event {
	if after == "" {
		return evs
	}
	for i, e := range evs {
		if events.Before(after, e.ID) {
			return evs[i:]
		}
	}
	return nil
}

// reachesEnd reports whether evs hold the end of h's caller's stream: its
// job.completed, or its own holder.detached marker.
func reachesEnd(h store.Head, evs []events.Event) bool {
	for _, e := range evs {
		switch e.Type {
		case events.JobCompleted:
			return true
		case events.HolderDetached:
			var d events.HolderData
			if json.Unmarshal(e.Data, &d) == nil && d.Holder == h.ID {
				return true
			}
		}
	}
	return false
}

// errStreamEnded stops a stream at the caller's own end (its cancel of a
// job it shares).
var errStreamEnded = errors.New("the caller's stream has ended")

// seenBy wraps send so that the work's events reach the caller of h as its
// own: under its job id, ending at its cancel of a shared job (a
// holder.detached marker of its own becomes its job.completed), without
// others' markers, and without the webhook events of a job it joined.
func (s *Server) seenBy(h store.Head, send func(events.Event) error) func(events.Event) error {
	me, work := h.ID, h.Work
	return func(e events.Event) error {
		switch e.Type {
		case events.HolderDetached:
			var d events.HolderData
			if json.Unmarshal(e.Data, &d) != nil || d.Holder != me {
				return nil
			}
			data, _ := json.Marshal(events.CompletedData{JobID: me, Status: string(job.StatusCanceled), Error: job.CanceledByClient})
			if err := send(events.Event{ID: e.ID, Type: events.JobCompleted, Data: data}); err != nil {
				return err
			}
			return errStreamEnded
		case events.WebhookDelivered, events.WebhookFailed:
			if me != work {
				return nil
			}
		case events.JobAccepted, events.JobCompleted:
			if me != work {
				e.Data = bytes.Replace(e.Data, []byte(`"job_id":"`+work+`"`), []byte(`"job_id":"`+me+`"`), 1)
			}
		}
		return send(e)
	}
}

// frame renders one event per the WHATWG SSE format. gin-contrib/sse is not
// used: it writes "data:<nil>" for an event without data and drops write
// errors, which would hide a client that went away.
func frame(e events.Event) []byte {
	var b strings.Builder
	b.Grow(len(e.ID) + len(e.Type) + len(e.Data) + 24)
	b.WriteString("id: ")
	b.WriteString(e.ID)
	b.WriteString("\nevent: ")
	b.WriteString(e.Type)
	b.WriteByte('\n')
	// JSON from our encoders is one line; split anyway so that a newline can
	// never end the event early.
	for _, line := range strings.Split(strings.ReplaceAll(string(e.Data), "\r\n", "\n"), "\n") {
		b.WriteString("data: ")
		b.WriteString(strings.TrimSuffix(line, "\r"))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return []byte(b.String())
}
