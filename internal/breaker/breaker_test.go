package breaker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/tooling/testclock"
)

func TestMain(m *testing.M) { redistest.Main(m) }

var (
	errServer = errors.New("503")
	errClient = errors.New("400")
	errCancel = errors.New("canceled")
)

// epoch is where test clocks start: on a whole second, so that offsets of
// whole seconds are bucket boundaries.
var epoch = time.Unix(1_700_000_000, 0)

// changeLog records a process' OnStateChange calls.
type changeLog struct {
	mu   sync.Mutex
	list []string
}

func (l *changeLog) record(_ string, from, to State) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, from.String()+"→"+to.String())
}

func (l *changeLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.list)
}

// bundle is what a test's breaker works with.
type bundle struct {
	db      redistest.DB
	clock   *testclock.Clock
	changes *changeLog
	set     *Set
}

// testSettings: opens at 5 failures of 10 requests (Failures 3 and
// MinRequests 10 at ratio 0.5) within 10 s; open for 10 s; ramp as long.
func testSettings() Settings {
	return Settings{
		Failures:     3,
		MinRequests:  10,
		FailureRatio: 0.5,
		Window:       10 * time.Second,
		OpenFor:      10 * time.Second,
		TrialTTL:     30 * time.Second,
		IsFailure:    func(err error) bool { return errors.Is(err, errServer) },
		IsExcluded:   func(err error) bool { return errors.Is(err, errCancel) },
	}
}

// setup returns the breaker "p/m" of one process on a database of its own,
// with a test clock; mod changes testSettings.
func setup(t *testing.T, mod func(*Settings)) (*Breaker, *bundle) {
	t.Helper()
	bu := &bundle{db: redistest.New(t), clock: testclock.New(epoch)}
	b, changes, set := bu.newProcess(t, bu.db.Client, mod)
	bu.changes, bu.set = changes, set
	return b, bu
}

// process returns the same breaker as seen by another process: its own
// client and Set, the same clock.
func (bu *bundle) process(t *testing.T, mod func(*Settings)) (*Breaker, *changeLog) {
	t.Helper()
	b, changes, _ := bu.newProcess(t, bu.db.NewClient(t), mod)
	return b, changes
}

func (bu *bundle) newProcess(t *testing.T, rdb redis.UniversalClient, mod func(*Settings)) (*Breaker, *changeLog, *Set) {
	t.Helper()
	s := testSettings()
	if mod != nil {
		mod(&s)
	}
	changes := &changeLog{}
	s.OnStateChange = changes.record
	s.Now = bu.clock.Now
	set := NewSet(NewStore(rdb, "tt:breaker:"), s)
	b, err := set.Get("p/m")
	if err != nil {
		t.Fatal(err)
	}
	return b, changes, set
}

func allow(t *testing.T, b *Breaker) func(error) {
	t.Helper()
	done, err := b.Allow(context.Background())
	if err != nil {
		t.Fatalf("Allow: %v", err)
	}
	return done
}

func wantOpen(t *testing.T, b *Breaker, halfOpen bool) *OpenError {
	t.Helper()
	_, err := b.Allow(context.Background())
	var oe *OpenError
	if !errors.As(err, &oe) || !errors.Is(err, ErrOpen) || oe.HalfOpen != halfOpen || oe.Ramping {
		t.Fatalf("Allow = %v, want an OpenError (half-open %v)", err, halfOpen)
	}
	return oe
}

func state(t *testing.T, b *Breaker) State {
	t.Helper()
	st, err := b.State()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// trip opens b: Failures failures out of MinRequests requests.
func trip(t *testing.T, b *Breaker) {
	t.Helper()
	st := b.set.settings
	var dones []func(error)
	for range st.MinRequests {
		dones = append(dones, allow(t, b))
	}
	for _, done := range dones {
		done(errServer)
	}
	if s := state(t, b); s != StateOpen {
		t.Fatalf("state %s after %d failures of %d requests, want open", s, st.MinRequests, st.MinRequests)
	}
}

// window returns the requests and failures b's window holds now.
func window(t *testing.T, b *Breaker) (requests, failures int64) {
	t.Helper()
	s := b.set
	h, err := s.store.rdb.HGetAll(context.Background(), s.store.key(b.name)).Result()
	if err != nil {
		t.Fatal(err)
	}
	gen, _ := strconv.ParseInt(h["gen"], 10, 64)
	nb := s.settings.Now().UnixMilli() / s.width.Milliseconds()
	for f, v := range h {
		if !strings.HasPrefix(f, "w") {
			continue
		}
		var g, bk, r, fl int64
		if _, err := fmt.Sscanf(strings.ReplaceAll(v, ":", " "), "%d %d %d %d", &g, &bk, &r, &fl); err != nil {
			t.Fatalf("bucket %s = %q: %v", f, v, err)
		}
		if g == gen && nb-bk < s.buckets {
			requests, failures = requests+r, failures+fl
		}
	}
	return requests, failures
}

// call is one request of a scenario: admitted at at, ending took later.
type call struct {
	at, took time.Duration
	outcome  error
}

// burst is n requests admitted together at at: failures of them fail after
// failAfter, the others succeed after okAfter.
func burst(at time.Duration, n, failures int, failAfter, okAfter time.Duration) []call {
	var cs []call
	for i := range n {
		c := call{at: at, took: okAfter}
		if i < failures {
			c = call{at: at, took: failAfter, outcome: errServer}
		}
		cs = append(cs, c)
	}
	return cs
}

func repeat(n int, c call) []call {
	cs := make([]call, n)
	for i := range cs {
		cs[i] = c
	}
	return cs
}

// The ratio is judged over one population: the requests admitted in the
// window, failures counted in the bucket of their admission.
func TestBreakerRatio(t *testing.T) {
	t.Parallel()
	const fast, slow = 100 * time.Millisecond, 5 * time.Second
	tests := []struct {
		name  string
		calls []call
		want  State
		// stayClosed: closed after every step, not only at the end.
		stayClosed bool
	}{
		{
			name:  "30% failures ending before the slow successes",
			calls: burst(0, 20, 6, fast, slow), want: StateClosed, stayClosed: true,
		},
		{
			name:  "70% failures ending before the slow successes",
			calls: burst(0, 20, 14, fast, slow), want: StateOpen,
		},
		{
			name:  "every request failing, below the minimum request count",
			calls: burst(0, 9, 9, fast, slow), want: StateClosed, stayClosed: true,
		},
		{
			name:  "half failing, at the minimum request count",
			calls: burst(0, 10, 5, fast, slow), want: StateOpen,
		},
		{
			// Cancelled first: 5 failures of 5 requests then, below the minimum.
			name: "excluded outcomes count in neither",
			calls: append(repeat(5, call{took: fast, outcome: errCancel}),
				repeat(5, call{took: slow, outcome: errServer})...),
			want: StateClosed, stayClosed: true,
		},
		{
			name: "errors that are not failures are answers",
			calls: append(repeat(4, call{took: fast, outcome: errServer}),
				repeat(6, call{took: fast, outcome: errClient})...),
			want: StateClosed, stayClosed: true,
		},
		{
			name:  "successes within the window dilute later failures",
			calls: append(burst(0, 10, 0, fast, fast), burst(5*time.Second, 10, 6, fast, fast)...),
			want:  StateClosed, stayClosed: true,
		},
		{
			name:  "successes that left the window no longer dilute",
			calls: append(burst(0, 10, 0, fast, fast), burst(11*time.Second, 10, 6, fast, fast)...),
			want:  StateOpen,
		},
		{
			name:  "failures that left the window no longer count",
			calls: append(burst(0, 10, 4, fast, fast), burst(12*time.Second, 2, 2, fast, fast)...),
			want:  StateClosed, stayClosed: true,
		},
		{
			name:  "requests outliving the window count where they end",
			calls: burst(0, 10, 10, 15*time.Second, 0), want: StateOpen,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, bu := setup(t, nil)
			type event struct {
				at  time.Duration
				end bool
				i   int
			}
			var events []event
			for i, c := range tt.calls {
				events = append(events, event{c.at, false, i}, event{c.at + c.took, true, i})
			}
			sort.SliceStable(events, func(i, j int) bool {
				if events[i].at != events[j].at {
					return events[i].at < events[j].at
				}
				return !events[i].end && events[j].end // admissions first
			})
			dones := make([]func(error), len(tt.calls))
			for n, e := range events {
				bu.clock.Set(epoch.Add(e.at))
				if !e.end {
					done, err := b.Allow(context.Background())
					if err != nil && !errors.Is(err, ErrOpen) {
						t.Fatal(err)
					}
					dones[e.i] = done // nil when refused
				} else if done := dones[e.i]; done != nil {
					done(tt.calls[e.i].outcome)
				}
				if tt.stayClosed {
					if st := state(t, b); st != StateClosed {
						r, f := window(t, b)
						t.Fatalf("step %d (%+v): %s with %d failures of %d requests, want closed", n, e, st, f, r)
					}
				}
			}
			if st := state(t, b); st != tt.want {
				t.Fatalf("state %s, want %s", st, tt.want)
			}
			if tt.want == StateOpen {
				wantOpen(t, b, false)
			}
		})
	}
}

func TestBreakerSharedByTwoProcesses(t *testing.T) {
	t.Parallel()
	w1, bu := setup(t, nil)
	w2, changes2 := bu.process(t, nil)
	openFor := w1.set.settings.OpenFor

	// Each process admits half of the window's requests and reports its
	// own outcomes; together they open the breaker for both.
	var d1, d2 []func(error)
	for range 5 {
		d1 = append(d1, allow(t, w1))
		d2 = append(d2, allow(t, w2))
	}
	for i, done := range d1 {
		var outcome error
		if i < 2 {
			outcome = errServer
		}
		done(outcome)
	}
	d2[0](errServer)
	d2[1](errServer)
	if st := state(t, w1); st != StateClosed {
		t.Fatalf("state %s after 4 failures of 10 requests, want closed", st)
	}
	d2[2](errServer)
	for _, b := range []*Breaker{w1, w2} {
		if st := state(t, b); st != StateOpen {
			t.Fatalf("%s: state %s after 5 failures of 10 requests, want open", b.Name(), st)
		}
		if oe := wantOpen(t, b, false); oe.RetryAfter != openFor {
			t.Errorf("RetryAfter %s, want %s (no time passed)", oe.RetryAfter, openFor)
		}
	}
	d2[3](nil) // admitted before the opening: counts for nothing
	d2[4](errServer)

	// After the open time, one trial, whichever process asks first; the
	// other waits too.
	bu.clock.Advance(openFor)
	trial := allow(t, w2)
	wantOpen(t, w1, true)
	wantOpen(t, w2, true)
	trial(errServer) // a failed trial opens it again
	if st := state(t, w1); st != StateOpen {
		t.Fatalf("state %s after a failed trial, want open", st)
	}
	wantOpen(t, w2, false)

	bu.clock.Advance(openFor)
	trial = allow(t, w1)
	wantOpen(t, w2, true)
	trial(nil)
	trial(errServer) // done counts once
	for _, b := range []*Breaker{w1, w2} {
		if st := state(t, b); st != StateClosed {
			t.Fatalf("%s: state %s after a successful trial, want closed", b.Name(), st)
		}
	}

	// Each process reports the transitions it saw, in order.
	want1 := []string{"closed→open", "open→half-open", "half-open→open", "open→half-open", "half-open→closed"}
	if got := bu.changes.get(); !slices.Equal(got, want1) {
		t.Errorf("process 1 saw %q, want %q", got, want1)
	}
	if got := changes2.get(); !slices.Equal(got, want1) {
		t.Errorf("process 2 saw %q, want %q", got, want1)
	}
}

// After closing, the share of calls admitted rises over the ramp; those
// refused are told to come back at spread-out times.
func TestBreakerRampsUpAfterClosing(t *testing.T) {
	t.Parallel()
	const calls = 100
	tests := []struct {
		name     string
		after    float64 // of the ramp, since closing
		min, max int     // calls admitted of 100
		outcome  error
		want     State
	}{
		{name: "right after closing", after: 0, min: 1, max: calls/10 + 1, want: StateClosed},
		{name: "half way", after: 0.5, min: calls * 50 / 100, max: calls*60/100 + 1, want: StateClosed},
		{name: "after the ramp", after: 1, min: calls, max: calls, want: StateClosed},
		{name: "failures during the ramp open it again", after: 0.5, min: calls * 50 / 100, max: calls*60/100 + 1, outcome: errServer, want: StateOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, bu := setup(t, nil)
			st := b.set.settings
			trip(t, b)
			bu.clock.Advance(st.OpenFor)
			allow(t, b)(nil)
			if s := state(t, b); s != StateClosed {
				t.Fatalf("state %s after a successful trial, want closed", s)
			}
			bu.clock.Advance(time.Duration(tt.after * float64(st.Ramp)))

			var dones []func(error)
			hints := map[time.Duration]bool{}
			step := st.Ramp / 10
			for range calls {
				done, err := b.Allow(context.Background())
				var oe *OpenError
				switch {
				case err == nil:
					dones = append(dones, done)
				case errors.As(err, &oe) && oe.Ramping && errors.Is(err, ErrOpen):
					if oe.RetryAfter < step/2 || oe.RetryAfter >= step*3/2 {
						t.Errorf("retry hint %s, want within [%s, %s)", oe.RetryAfter, step/2, step*3/2)
					}
					hints[oe.RetryAfter] = true
				default:
					t.Fatalf("Allow = %v, want admitted or refused while ramping", err)
				}
			}
			if n := len(dones); n < tt.min || n > tt.max {
				t.Errorf("%d of %d calls admitted, want %d to %d", n, calls, tt.min, tt.max)
			}
			if refused := calls - len(dones); refused > 1 && len(hints) < 2 {
				t.Errorf("%d calls refused with %d distinct retry hints: they would all come back at once", refused, len(hints))
			}
			for _, done := range dones {
				done(tt.outcome)
			}
			if s := state(t, b); s != tt.want {
				t.Errorf("state %s after the admitted calls ended (%v), want %s", s, tt.outcome, tt.want)
			}
		})
	}
}

func TestBreakerTrials(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		trials uint32
		// end ends the first trial; then the clock moves by wait.
		end  func(done func(error))
		wait time.Duration
	}{
		{name: "a cancelled trial frees its slot", trials: 1, end: func(done func(error)) { done(errCancel) }},
		{name: "a dead trial's slot frees after TrialTTL", trials: 1, end: func(func(error)) {}, wait: 30 * time.Second},
		{name: "two trials at a time", trials: 2, end: func(func(error)) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, bu := setup(t, func(s *Settings) { s.Trials = tt.trials })
			trip(t, b)
			bu.clock.Advance(b.set.settings.OpenFor)
			first := allow(t, b)
			if tt.trials == 1 {
				wantOpen(t, b, true)
			}
			tt.end(first)
			bu.clock.Advance(tt.wait)
			if st := state(t, b); st != StateHalfOpen {
				t.Fatalf("state %s, want still half-open", st)
			}
			second := allow(t, b) // the slot is free for the next trial
			wantOpen(t, b, true)
			second(nil)
			if st := state(t, b); st != StateClosed {
				t.Fatalf("state %s after a successful trial, want closed", st)
			}
			first(errServer) // late, and its generation is gone: nothing
			if st := state(t, b); st != StateClosed {
				t.Fatalf("state %s after a stale trial's failure, want closed", st)
			}
		})
	}
}

// If Redis cannot be reached, requests go through (fail open) and their
// outcomes are dropped, with a warning.
func TestBreakerAdmitsWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		client func(t *testing.T, db redistest.DB) redis.UniversalClient
	}{
		{"nothing listening", func(t *testing.T, _ redistest.DB) redis.UniversalClient {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			_ = l.Close()
			c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
			t.Cleanup(func() { _ = c.Close() })
			return c
		}},
		{"client closed", func(t *testing.T, db redistest.DB) redis.UniversalClient {
			c := db.NewClient(t)
			_ = c.Close()
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var logs bytes.Buffer
			s := testSettings()
			s.Failures, s.MinRequests = 1, 1
			s.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
			b, err := NewSet(NewStore(tt.client(t, redistest.New(t)), "tt:breaker:"), s).Get("p/m")
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				done, err := b.Allow(context.Background())
				if err != nil {
					t.Fatalf("Allow = %v, want admitted", err)
				}
				done(errServer) // not recorded, and no panic
			}
			if _, err := b.State(); err == nil {
				t.Error("State reported no error with Redis down")
			}
			mu.Lock()
			defer mu.Unlock()
			if n := strings.Count(logs.String(), "store unreachable"); n != 1 {
				t.Errorf("%d warnings, want 1 (at most one per %s):\n%s", n, logEvery, logs.String())
			}
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// A caller that gave up gets its own error, not an admission.
func TestBreakerAllowHonoursTheCallersContext(t *testing.T) {
	t.Parallel()
	b, _ := setup(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if done, err := b.Allow(ctx); !errors.Is(err, context.Canceled) || done != nil {
		t.Fatalf("Allow with a cancelled context = %v, want context.Canceled", err)
	}
}

// One round trip per Allow, at most one per outcome, none for a success
// within the window; keys expire.
func TestBreakerCost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		outcome error
		later   time.Duration
		scripts int64 // run by done
	}{
		{"success", nil, 0, 0},
		{"success after the window", nil, 11 * time.Second, 1},
		{"failure", errServer, 0, 1},
		{"excluded", errCancel, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bu := &bundle{db: redistest.New(t), clock: testclock.New(epoch)}
			rdb := bu.db.NewClient(t)
			// Loaded first, as a running process has them: a first run
			// would count its NOSCRIPT fallback as a second script.
			for _, sc := range []*redis.Script{allowScript, recordScript} {
				if err := sc.Load(context.Background(), rdb).Err(); err != nil {
					t.Fatal(err)
				}
			}
			var scripts redistest.ScriptCounter
			rdb.AddHook(&scripts)
			b, _, set := bu.newProcess(t, rdb, nil)
			done := allow(t, b)
			if n := scripts.Load(); n != 1 {
				t.Errorf("Allow ran %d scripts, want 1", n)
			}
			bu.clock.Advance(tt.later)
			done(tt.outcome)
			if n := scripts.Load() - 1; n != tt.scripts {
				t.Errorf("done(%v) ran %d scripts, want %d", tt.outcome, n, tt.scripts)
			}
			ttl := bu.db.Client.PTTL(context.Background(), set.store.key("p/m")).Val()
			if ttl <= 0 || ttl > set.keyTTL {
				t.Errorf("key TTL %s, want within (0, %s]", ttl, set.keyTTL)
			}
		})
	}
}

func TestBreakerCountsEveryConcurrentOutcome(t *testing.T) {
	t.Parallel()
	const procs, goroutines, each = 2, 8, 10
	never := func(s *Settings) { s.Failures, s.MinRequests = 1000, 1000 }
	b0, bu := setup(t, never)
	bs := []*Breaker{b0}
	for range procs - 1 {
		b, _ := bu.process(t, never)
		bs = append(bs, b)
	}
	var wg sync.WaitGroup
	for _, b := range bs {
		for g := range goroutines {
			wg.Go(func() {
				for i := range each {
					done, err := b.Allow(context.Background())
					if err != nil {
						t.Error(err)
						return
					}
					switch (g + i) % 3 {
					case 0:
						done(errServer)
					case 1:
						done(errCancel)
					default:
						done(nil)
					}
				}
			})
		}
	}
	wg.Wait()
	var failures, excluded int64
	for g := range goroutines {
		for i := range each {
			switch (g + i) % 3 {
			case 0:
				failures++
			case 1:
				excluded++
			}
		}
	}
	failures, excluded = failures*procs, excluded*procs
	req, fail := window(t, b0)
	if want := int64(procs*goroutines*each) - excluded; req != want || fail != failures {
		t.Errorf("window holds %d failures of %d requests, want %d of %d: updates were lost", fail, req, failures, want)
	}
}
