package quota

import (
	"sync"
	"sync/atomic"
	"time"
)

// connRetry is the Retry-After of a refused connection. A connection frees
// up when another one closes, which nobody can tell ahead; a few seconds
// keep reconnecting clients from hammering the server meanwhile.
const connRetry = 5 * time.Second

// Conns counts the server-sent-event connections of one process, in all
// and per owner, under a cap of each. Connections are a resource of the
// process (its sockets and goroutines), so the caps are the process'. It
// is safe for concurrent use.
type Conns struct {
	perProcess int

	mu    sync.Mutex
	total int
	by    map[string]int
}

// NewConns returns the connection counts of a process that holds at most
// perProcess connections (0 or less: no cap).
func NewConns(perProcess int) *Conns {
	return &Conns{perProcess: perProcess, by: map[string]int{}}
}

// Acquire takes a connection for owner if owner holds fewer than perOwner
// (0 or less: no cap) and the process fewer than its cap. It returns the
// function that gives the connection back (calling it again does nothing)
// and the decision: refused by sse_connections (the owner's cap, checked
// first: the one a client can act on) or sse_connections_process. A
// refused Acquire takes nothing; its release does nothing.
func (c *Conns) Acquire(owner string, perOwner int) (release func(), d Decision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	held := c.by[owner]
	switch {
	case perOwner > 0 && held >= perOwner:
		return func() {}, Decision{Limit: LimitSSE, Quota: int64(perOwner), RetryAfter: connRetry}
	case c.perProcess > 0 && c.total >= c.perProcess:
		return func() {}, Decision{Limit: LimitSSEProcess, Quota: int64(c.perProcess), RetryAfter: connRetry}
	}
	c.by[owner] = held + 1
	c.total++
	d = Decision{Allowed: true, Limit: LimitSSE}
	if perOwner > 0 {
		d.Quota, d.Remaining = int64(perOwner), int64(perOwner-held-1)
	}
	if c.perProcess > 0 && (d.Quota == 0 || c.perProcess-c.total < int(d.Remaining)) {
		d.Limit, d.Quota, d.Remaining = LimitSSEProcess, int64(c.perProcess), int64(c.perProcess-c.total)
	}
	var once atomic.Bool
	return func() {
		if once.Swap(true) {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.total--
		if c.by[owner]--; c.by[owner] <= 0 {
			delete(c.by, owner)
		}
	}, d
}

// Total returns the connections the process holds.
func (c *Conns) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Of returns the connections owner holds in the process.
func (c *Conns) Of(owner string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.by[owner]
}
