package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"time"
)

// A tap stands between one worker and the simulator: it forwards every
// request unchanged (streams flushed as they come) and records the calls in
// flight, by job and model. It is how the suite knows which jobs a worker
// was working on when it was killed, and when to kill it: "once worker-1 has
// 16 snapshot calls in flight" is a condition to wait for, not a guess.
//
// A call is attributed to a job by the job's token, which every question of
// the suite carries and every prompt of the job repeats (the question is in
// the snapshot, key-changes and narrative prompts).
type tap struct {
	srv     *http.Server
	url     string
	changed *notifier

	mu    sync.Mutex
	next  uint64
	calls map[uint64]tapCall
}

// notifier wakes whoever waits for a change of any of the taps sharing it.
type notifier struct {
	mu sync.Mutex
	ch chan struct{} // closed and replaced at every change
}

func newNotifier() *notifier { return &notifier{ch: make(chan struct{})} }

func (n *notifier) notify() {
	n.mu.Lock()
	close(n.ch)
	n.ch = make(chan struct{})
	n.mu.Unlock()
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

// waitFor blocks until cond holds, re-checking it at every change, or
// until ctx ends.
func (n *notifier) waitFor(ctx context.Context, cond func() bool) error {
	for {
		ch := n.wait() // before cond: a change during cond is not lost
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// tapCall is one request in flight through a tap.
type tapCall struct {
	Token int
	Model string
	Start time.Time
}

// tokenRe finds a job's token in a request body (see question).
var tokenRe = regexp.MustCompile(`chaos#(\d+)#`)

// question returns the question of the job with the given token: unique,
// so that no two jobs of a run share a cache entry or join each other.
func question(token int) string {
	return fmt.Sprintf("What are the best AI models? (chaos#%d#)", token)
}

// tokenOf returns the token a prompt carries, or -1.
func tokenOf(body []byte) int {
	m := tokenRe.FindSubmatch(body)
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(string(m[1]))
	if err != nil {
		return -1
	}
	return n
}

// startTap listens on a free loopback port and forwards to target (the
// simulator's root URL); changes of its calls go to changed.
func startTap(target string, changed *notifier) (*tap, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	t := &tap{url: "http://" + ln.Addr().String(), calls: map[uint64]tapCall{}, changed: changed}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(u) },
		Transport:     tr,
		FlushInterval: -1,
		// A worker killed mid-answer is the point of the exercise, not
		// something to log.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	t.srv = &http.Server{Handler: t.handler(proxy), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = t.srv.Serve(ln) }()
	return t, nil
}

// URL is the tap's root; a worker's OPENAI_BASE_URL is URL + "/v1".
func (t *tap) URL() string { return t.url }

// Close stops the tap; calls in flight are cut.
func (t *tap) Close() { _ = t.srv.Close() }

func (t *tap) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var head struct {
			Model string `json:"model"`
		}
		_ = json.Unmarshal(body, &head)
		id := t.begin(tapCall{Token: tokenOf(body), Model: head.Model, Start: time.Now()})
		// Deferred: the proxy panics with http.ErrAbortHandler when the
		// worker went away mid-answer.
		defer t.end(id)
		next.ServeHTTP(w, r)
	})
}

func (t *tap) begin(c tapCall) uint64 {
	t.mu.Lock()
	t.next++
	id := t.next
	t.calls[id] = c
	t.mu.Unlock()
	t.changed.notify()
	return id
}

func (t *tap) end(id uint64) {
	t.mu.Lock()
	delete(t.calls, id)
	t.mu.Unlock()
	t.changed.notify()
}

// InFlight returns the calls in flight now.
func (t *tap) InFlight() []tapCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]tapCall, 0, len(t.calls))
	for _, c := range t.calls {
		out = append(out, c)
	}
	return out
}

// Count returns the calls of model in flight now ("" counts every model).
func (t *tap) Count(model string) int {
	n := 0
	for _, c := range t.InFlight() {
		if model == "" || c.Model == model {
			n++
		}
	}
	return n
}
