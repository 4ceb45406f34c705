package quota

import (
	"sync"
	"testing"
)

func TestConns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		perProcess int
		perOwner   int
		held       map[string]int // connections held before
		allowed    bool
		limit      string
		quota      int64
		remaining  int64
	}{
		{"no caps", 0, 0, map[string]int{"a": 50}, true, LimitSSE, 0, 0},
		{"the owner's cap", 10, 2, map[string]int{"a": 1}, true, LimitSSE, 2, 0},
		{"the owner's cap refuses", 10, 2, map[string]int{"a": 2}, false, LimitSSE, 2, 0},
		{"the process' cap refuses", 3, 5, map[string]int{"b": 3}, false, LimitSSEProcess, 3, 0},
		{"both full: the owner's cap is named", 3, 2, map[string]int{"a": 2, "b": 1}, false, LimitSSE, 2, 0},
		{"the process' cap is the tighter", 4, 5, map[string]int{"b": 2}, true, LimitSSEProcess, 4, 1},
		{"only the process' cap", 4, 0, nil, true, LimitSSEProcess, 4, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := NewConns(tt.perProcess)
			total := 0
			for owner, n := range tt.held {
				for range n {
					if _, d := c.Acquire(owner, 0); !d.Allowed {
						t.Fatalf("setting up: %+v", d)
					}
				}
				total += n
			}
			release, d := c.Acquire("a", tt.perOwner)
			if d.Allowed != tt.allowed || d.Limit != tt.limit || d.Quota != tt.quota || d.Remaining != tt.remaining {
				t.Errorf("decision %+v, want allowed %v by %s (quota %d, %d left)", d, tt.allowed, tt.limit, tt.quota, tt.remaining)
			}
			if !d.Allowed && d.RetryAfter <= 0 {
				t.Errorf("refused without a retry hint: %+v", d)
			}
			if d.Allowed {
				total++
			}
			if c.Total() != total {
				t.Errorf("total %d, want %d", c.Total(), total)
			}
			release()
			release() // again: nothing
			if want := total - btoi(d.Allowed); c.Total() != want || c.Of("a") != tt.held["a"] {
				t.Errorf("after release: total %d, a holds %d; want %d, %d", c.Total(), c.Of("a"), want, tt.held["a"])
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Concurrent acquisitions never pass the caps, and every release gives
// back exactly one connection.
func TestConnsConcurrent(t *testing.T) {
	t.Parallel()
	const perProcess, perOwner, owners, tries = 10, 4, 5, 200
	c := NewConns(perProcess)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		releases []func()
	)
	for o := range owners {
		owner := string(rune('a' + o))
		for range tries {
			wg.Go(func() {
				release, d := c.Acquire(owner, perOwner)
				if n := c.Of(owner); n > perOwner {
					t.Errorf("%s holds %d > %d", owner, n, perOwner)
				}
				if n := c.Total(); n > perProcess {
					t.Errorf("the process holds %d > %d", n, perProcess)
				}
				if d.Allowed {
					mu.Lock()
					releases = append(releases, release, release) // twice: idempotent
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(releases) != 2*perProcess {
		t.Errorf("%d connections granted, want %d (the process' cap)", len(releases)/2, perProcess)
	}
	for _, r := range releases {
		wg.Go(r)
	}
	wg.Wait()
	if c.Total() != 0 {
		t.Errorf("%d connections left after every release", c.Total())
	}
	for o := range owners {
		if n := c.Of(string(rune('a' + o))); n != 0 {
			t.Errorf("owner %d holds %d", o, n)
		}
	}
}
