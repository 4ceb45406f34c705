package queuemetrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// sample is one collected sample: its family's type and its value.
type sample struct {
	typ dto.MetricType
	v   float64
}

// collect gathers c from a registry of its own (which also checks the
// samples against Describe) and returns its samples by
// name{label="value",...}, labels in name order.
func collect(t *testing.T, c prometheus.Collector) map[string]sample {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]sample{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			key := mf.GetName()
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			v := m.GetGauge().GetValue()
			if mf.GetType() == dto.MetricType_COUNTER {
				v = m.GetCounter().GetValue()
			}
			out[key] = sample{mf.GetType(), v}
		}
	}
	return out
}

// queuesOf returns the queue label values among samples.
func queuesOf(samples map[string]sample) []string {
	seen := map[string]bool{}
	for k := range samples {
		if i := strings.Index(k, `queue="`); i >= 0 {
			rest := k[i+len(`queue="`):]
			seen[rest[:strings.IndexByte(rest, '"')]] = true
		}
	}
	var qs []string
	for q := range seen {
		qs = append(qs, q)
	}
	sort.Strings(qs)
	return qs
}

// TestCollectRealQueues: against a real Redis with tasks in every state
// asynq reaches without groups, the collected values are the queues'.
func TestCollectRealQueues(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	client := asynq.NewClientFromRedisClient(db.Client)
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	enqueue := func(task *asynq.Task, opts ...asynq.Option) *asynq.TaskInfo {
		t.Helper()
		ti, err := client.Enqueue(task, opts...)
		if err != nil {
			t.Fatalf("enqueue %s: %v", task.Type(), err)
		}
		return ti
	}

	// Queue "waiting", no server: 2 pending, 2 scheduled, 1 archived.
	var toArchive *asynq.TaskInfo
	for i := range 3 {
		ti := enqueue(asynq.NewTask("wait", []byte{byte(i)}), asynq.Queue("waiting"))
		toArchive = ti
	}
	for i := range 2 {
		enqueue(asynq.NewTask("later", []byte{byte(i)}), asynq.Queue("waiting"), asynq.ProcessIn(time.Hour))
	}
	if err := insp.ArchiveTask("waiting", toArchive.ID); err != nil {
		t.Fatal(err)
	}
	// Queue "stopped": 1 pending, paused.
	enqueue(asynq.NewTask("wait", nil), asynq.Queue("stopped"))
	if err := insp.PauseQueue("stopped"); err != nil {
		t.Fatal(err)
	}

	// Queue "work", served: one task succeeds (completed, kept), one fails
	// for good (archived), one fails and waits to be retried (retry), one
	// runs until the test ends (active).
	release := make(chan struct{})
	// The server changes the tasks' states with scripts of its client's.
	served := redistest.NewScriptWatch()
	sc := db.NewClient(t)
	sc.AddHook(served)
	srv := asynq.NewServerFromRedisClient(sc, asynq.Config{
		Concurrency:              4,
		Queues:                   map[string]int{"work": 1},
		TaskCheckInterval:        10 * time.Millisecond,
		DelayedTaskCheckInterval: time.Second,
		ShutdownTimeout:          5 * time.Second,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return time.Hour },
		LogLevel:                 asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("ok", func(context.Context, *asynq.Task) error { return nil })
	mux.HandleFunc("fail", func(context.Context, *asynq.Task) error { return errors.New("test: fails") })
	mux.HandleFunc("block", func(ctx context.Context, _ *asynq.Task) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	t.Cleanup(func() { close(release) }) // runs first: the blocked task ends
	enqueue(asynq.NewTask("ok", nil), asynq.Queue("work"), asynq.Retention(time.Hour))
	enqueue(asynq.NewTask("fail", []byte("archive")), asynq.Queue("work"), asynq.MaxRetry(0))
	enqueue(asynq.NewTask("fail", []byte("retry")), asynq.Queue("work"), asynq.MaxRetry(3))
	enqueue(asynq.NewTask("block", nil), asynq.Queue("work"))

	served.Until(t, 30*time.Second, "queue work settled (active, retry, archived, completed 1 each)", func() bool {
		qi, err := insp.GetQueueInfo("work")
		return err == nil && qi.Active == 1 && qi.Retry == 1 && qi.Archived == 1 && qi.Completed == 1 && qi.ProcessedTotal == 3
	})

	got := collect(t, New(insp, Options{Log: quiet}))
	const g, c = dto.MetricType_GAUGE, dto.MetricType_COUNTER
	tests := []struct {
		key  string
		want sample
	}{
		{`asynq_queue_tasks{queue="waiting",state="pending"}`, sample{g, 2}},
		{`asynq_queue_tasks{queue="waiting",state="scheduled"}`, sample{g, 2}},
		{`asynq_queue_tasks{queue="waiting",state="archived"}`, sample{g, 1}},
		{`asynq_queue_tasks{queue="waiting",state="active"}`, sample{g, 0}},
		{`asynq_queue_tasks{queue="waiting",state="retry"}`, sample{g, 0}},
		{`asynq_queue_tasks{queue="waiting",state="completed"}`, sample{g, 0}},
		{`asynq_queue_tasks{queue="waiting",state="aggregating"}`, sample{g, 0}},
		{`asynq_queue_size{queue="waiting"}`, sample{g, 5}},
		{`asynq_queue_paused{queue="waiting"}`, sample{g, 0}},
		{`asynq_tasks_processed_total{queue="waiting"}`, sample{c, 0}},
		{`asynq_tasks_failed_total{queue="waiting"}`, sample{c, 0}},

		{`asynq_queue_tasks{queue="stopped",state="pending"}`, sample{g, 1}},
		{`asynq_queue_size{queue="stopped"}`, sample{g, 1}},
		{`asynq_queue_paused{queue="stopped"}`, sample{g, 1}},

		{`asynq_queue_tasks{queue="work",state="pending"}`, sample{g, 0}},
		{`asynq_queue_tasks{queue="work",state="active"}`, sample{g, 1}},
		{`asynq_queue_tasks{queue="work",state="retry"}`, sample{g, 1}},
		{`asynq_queue_tasks{queue="work",state="archived"}`, sample{g, 1}},
		{`asynq_queue_tasks{queue="work",state="completed"}`, sample{g, 1}},
		{`asynq_queue_size{queue="work"}`, sample{g, 4}}, // completed included
		{`asynq_queue_latency_seconds{queue="work"}`, sample{g, 0}},
		{`asynq_queue_paused{queue="work"}`, sample{g, 0}},
		{`asynq_tasks_processed_total{queue="work"}`, sample{c, 3}},
		{`asynq_tasks_failed_total{queue="work"}`, sample{c, 2}},

		{ErrorsName, sample{c, 0}},
	}
	for _, tt := range tests {
		s, ok := got[tt.key]
		if !ok {
			t.Errorf("%s not collected", tt.key)
			continue
		}
		if s != tt.want {
			t.Errorf("%s = %v %v, want %v %v", tt.key, s.typ, s.v, tt.want.typ, tt.want.v)
		}
	}
	// Values that depend on time and Redis' allocator: only their sign.
	if s := got[`asynq_queue_latency_seconds{queue="waiting"}`]; s.typ != g || s.v <= 0 {
		t.Errorf("latency of waiting = %v %v, want a positive gauge", s.typ, s.v)
	}
	for _, q := range []string{"waiting", "stopped", "work"} {
		if s := got[`asynq_queue_memory_usage_approx_bytes{queue="`+q+`"}`]; s.typ != g || s.v <= 0 {
			t.Errorf("memory of %s = %v %v, want a positive gauge", q, s.typ, s.v)
		}
	}
	if qs := queuesOf(got); strings.Join(qs, ",") != "stopped,waiting,work" {
		t.Errorf("queues %v, want stopped, waiting, work", qs)
	}

	// promlint is what testutil.CollectAndLint runs.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(New(insp, Options{Log: quiet}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// fakeInspector answers from its fields; GetQueueInfo answers queue q from
// infos[q] or fails with errs[q].
type fakeInspector struct {
	queues   []string
	queueErr error
	infos    map[string]*asynq.QueueInfo
	errs     map[string]error
	panics   bool
	block    chan struct{} // if set, Queues waits for it to close
	calls    atomic.Int32  // calls of Queues
}

func (f *fakeInspector) Queues() ([]string, error) {
	f.calls.Add(1)
	if f.block != nil {
		<-f.block
	}
	if f.panics {
		panic("test: inspector panics")
	}
	return f.queues, f.queueErr
}

func (f *fakeInspector) GetQueueInfo(q string) (*asynq.QueueInfo, error) {
	if err := f.errs[q]; err != nil {
		return nil, err
	}
	return f.infos[q], nil
}

// TestCollectFailures: a failing, panicking or invalid read leaves out
// what it could not read, counts the scrape, and never fails the gather.
func TestCollectFailures(t *testing.T) {
	t.Parallel()
	info := func(q string) *asynq.QueueInfo { return &asynq.QueueInfo{Queue: q, Pending: 1, Size: 1} }
	tests := []struct {
		name       string
		insp       *fakeInspector
		wantQueues string
		wantErrs   float64
	}{
		{"ok", &fakeInspector{queues: []string{"a", "b"}, infos: map[string]*asynq.QueueInfo{"a": info("a"), "b": info("b")}}, "a,b", 0},
		{"no queues", &fakeInspector{}, "", 0},
		{"listing fails", &fakeInspector{queueErr: errors.New("test: redis down")}, "", 1},
		{"one queue fails", &fakeInspector{
			queues: []string{"a", "b"},
			infos:  map[string]*asynq.QueueInfo{"b": info("b")},
			errs:   map[string]error{"a": errors.New("test: gone")},
		}, "b", 1},
		{"panics", &fakeInspector{panics: true}, "", 1},
		{"queue name not UTF-8", &fakeInspector{
			queues: []string{"a", "\xff"},
			infos:  map[string]*asynq.QueueInfo{"a": info("a"), "\xff": info("\xff")},
		}, "a", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := New(tt.insp, Options{Log: quiet})
			for scrape := 1; scrape <= 2; scrape++ {
				got := collect(t, c)
				if qs := strings.Join(queuesOf(got), ","); qs != tt.wantQueues {
					t.Errorf("scrape %d: queues %q, want %q", scrape, qs, tt.wantQueues)
				}
				// The counter counts every failed scrape.
				if s := got[ErrorsName]; s.v != tt.wantErrs*float64(scrape) {
					t.Errorf("scrape %d: %s = %v, want %v", scrape, ErrorsName, s.v, tt.wantErrs*float64(scrape))
				}
			}
		})
	}
}

// TestCollectTimeout: a read that does not answer in time is the scrape's
// error; later scrapes wait for that same read rather than start others,
// and see its answer once it comes.
func TestCollectTimeout(t *testing.T) {
	t.Parallel()
	f := &fakeInspector{
		queues: []string{"a"},
		infos:  map[string]*asynq.QueueInfo{"a": {Queue: "a"}},
		block:  make(chan struct{}),
	}
	c := New(f, Options{Timeout: 20 * time.Millisecond, Log: quiet})
	for scrape := 1; scrape <= 2; scrape++ {
		got := collect(t, c)
		if qs := queuesOf(got); len(qs) != 0 {
			t.Errorf("scrape %d: queues %v while the read hangs", scrape, qs)
		}
		if s := got[ErrorsName]; s.v != float64(scrape) {
			t.Errorf("scrape %d: %s = %v, want %d", scrape, ErrorsName, s.v, scrape)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("%d reads started, want 1", n)
	}
	c.mu.Lock()
	r := c.cur
	c.mu.Unlock()
	close(f.block)
	<-r.done
	got := collect(t, c)
	if qs := strings.Join(queuesOf(got), ","); qs != "a" {
		t.Errorf("after the read answered: queues %q, want a", qs)
	}
	if s := got[ErrorsName]; s.v != 2 {
		t.Errorf("after the read answered: %s = %v, want 2", ErrorsName, s.v)
	}
}
