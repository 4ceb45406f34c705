package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/store"
)

// retryHintMS is the reconnect delay suggested to SSE clients.
const retryHintMS = 2000

func (s *Server) streamEvents(c *gin.Context) {
	id, ok := jobID(c)
	if !ok {
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
	status, err := s.store.Status(c.Request.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		abort(c, http.StatusNotFound, CodeJobNotFound, "", "no job %q (unknown or expired)", id)
		return
	}
	if err != nil {
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not read the job; try again")
		return
	}

	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
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

	emit := func(e events.Event) error {
		if _, err := w.Write(frame(e)); err != nil {
			return err
		}
		w.Flush()
		return nil
	}
	if status.Terminal() {
		// An ended job's stream only grows by webhook events, which come
		// after the terminal one: replay what is there and close, even for
		// a client that resumes after the terminal event.
		evs, err := events.Read(ctx, s.rdb, id, after)
		if err != nil {
			s.log.Warn("read events of ended job", "job_id", id, "err", err)
			return
		}
		for _, e := range evs {
			if emit(e) != nil {
				return
			}
		}
		return
	}
	err = s.hub.Follow(ctx, id, emit, events.FollowOptions{
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
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("event stream ended early", "job_id", id, "err", err)
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
