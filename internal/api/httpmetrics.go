package api

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/timetravel-ai/timetravel/internal/metrics"
)

// httpMetrics counts every request in metrics.HTTPRequests and observes its
// duration, from here to the end of the handlers, in
// metrics.HTTPRequestDuration. The route label is the route template
// (c.FullPath()), or metrics.RouteUnmatched when no route matched; a raw
// path never is one. Install it first, before s.recovery(), so that a
// panic counts as the 500 it is answered with.
//
// The SSE route (streamRoute) is counted once, with the status its response
// starts with, when it starts (or, if it never starts through the handlers,
// when the request ends); its duration, how long the client stayed, is not
// observed. For that route the middleware returns before the handlers run
// instead of calling c.Next, so that it keeps no frame on the stack of every
// stream's goroutine (see Handler).
func (s *Server) httpMetrics() gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.FullPath() == streamRoute {
			countStream(c)
			return
		}
		start := time.Now()
		c.Next()
		observeRequest(c, start)
	}
}

// observeRequest records a request that ended; a function of its own, so
// that the middleware's frame stays small while the handlers run.
func observeRequest(c *gin.Context, start time.Time) {
	method, route := metrics.HTTPMethod(c.Request.Method), routeLabel(c.FullPath())
	metrics.HTTPRequests.WithLabelValues(method, route, metrics.StatusClass(c.Writer.Status())).Inc()
	metrics.HTTPRequestDuration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
}

func routeLabel(fullPath string) string {
	if fullPath == "" {
		return metrics.RouteUnmatched
	}
	return fullPath
}

// countStream sets up the count of a stream: its writer counts the
// response when it starts; a response that gin starts after the handlers
// (they wrote nothing, e.g. a 204) is counted when the request's context
// ends, which it does when the server is done with the request.
func countStream(c *gin.Context) {
	w := &streamWriter{ResponseWriter: c.Writer, method: metrics.HTTPMethod(c.Request.Method), route: c.FullPath()}
	c.Writer = w
	context.AfterFunc(c.Request.Context(), func() { w.count(int(w.status.Load())) })
}

// streamWriter counts a stream's request once, when its response starts.
// The methods that start a response check first whether it has started.
type streamWriter struct {
	gin.ResponseWriter
	method, route string
	// status is the status set so far, for the count at the request's end
	// (the wrapped writer belongs to gin's pooled context by then).
	status  atomic.Int32
	counted atomic.Bool
}

func (w *streamWriter) count(status int) {
	if status == 0 {
		status = http.StatusOK
	}
	if w.counted.CompareAndSwap(false, true) {
		metrics.HTTPRequests.WithLabelValues(w.method, w.route, metrics.StatusClass(status)).Inc()
	}
}

// starting counts the request if the response is about to start.
func (w *streamWriter) starting() {
	if !w.ResponseWriter.Written() {
		w.count(w.ResponseWriter.Status())
	}
}

func (w *streamWriter) WriteHeader(code int) {
	w.ResponseWriter.WriteHeader(code)
	w.status.Store(int32(w.ResponseWriter.Status()))
}

func (w *streamWriter) WriteHeaderNow() {
	w.starting()
	w.ResponseWriter.WriteHeaderNow()
}

func (w *streamWriter) Write(b []byte) (int, error) {
	w.starting()
	return w.ResponseWriter.Write(b)
}

func (w *streamWriter) WriteString(s string) (int, error) {
	w.starting()
	return w.ResponseWriter.WriteString(s)
}

func (w *streamWriter) Flush() {
	w.starting()
	w.ResponseWriter.Flush()
}

// Unwrap lets http.ResponseController reach the connection's writer (the
// stream lifts its read deadline through it).
func (w *streamWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
