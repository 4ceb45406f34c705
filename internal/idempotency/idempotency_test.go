package idempotency

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

const testTTL = 10 * time.Minute

func newKeys(t *testing.T) (*Keys, redistest.DB) {
	t.Helper()
	db := redistest.New(t)
	return New(db.Client, testTTL), db
}

func TestCheckKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		key  string
		ok   bool
	}{
		{"empty", "", false},
		{"one character", "a", true},
		{"uuid", "0190aaaa-0000-7000-8000-000000000001", true},
		{"braces", "{order-42}", true},
		{"inner space", "order 42", true},
		{"all printable ASCII", " !\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~"[1:], true},
		{"max length", strings.Repeat("k", MaxKeyLen), true},
		{"too long", strings.Repeat("k", MaxKeyLen+1), false},
		{"leading space", " key", false},
		{"trailing space", "key ", false},
		{"trailing tab", "key\t", false},
		{"non-ASCII", "clé", false},
		{"non-ASCII only", "日本", false},
		{"control character", "ke\x01y", false},
		{"newline inside", "ke\ny", false},
		{"DEL", "ke\x7fy", false},
		{"invalid UTF-8", "ke\xffy", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := CheckKey(tt.key); (err == nil) != tt.ok {
				t.Errorf("CheckKey(%q) = %v, want ok = %v", tt.key, err, tt.ok)
			}
		})
	}
}

func TestBodyHash(t *testing.T) {
	t.Parallel()
	type body struct {
		Question string   `json:"question"`
		Dates    []string `json:"dates,omitempty"`
	}
	h := func(v any) string {
		t.Helper()
		s, err := BodyHash(v)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := h(body{Question: "q", Dates: []string{"2023-01-01"}})
	if a != h(body{Question: "q", Dates: []string{"2023-01-01"}}) {
		t.Error("equal values hash differently")
	}
	// Member order of a decoded map does not count.
	if h(map[string]any{"a": 1, "b": 2}) != h(map[string]any{"b": 2, "a": 1}) {
		t.Error("equal maps hash differently")
	}
	if len(a) != 64 {
		t.Errorf("hash %q is not a hex SHA-256", a)
	}
	for _, other := range []any{
		body{Question: "q2", Dates: []string{"2023-01-01"}},
		body{Question: "q", Dates: []string{"2023-01-02"}},
		body{Question: "q"},
		map[string]any{"question": "q", "dates": []string{"2023-01-01"}, "x": 1},
	} {
		if h(other) == a {
			t.Errorf("%+v hashes like the first body", other)
		}
	}
	if _, err := BodyHash(func() {}); err == nil {
		t.Error("BodyHash of an unencodable value succeeded")
	}
}

// A request's hash counts its kind and its body's content, not how the
// body is written.
func TestRequestHash(t *testing.T) {
	t.Parallel()
	h := func(kind, body string) string {
		t.Helper()
		s, err := RequestHash(kind, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	const body = `{"question":"How do vaccines work?","complexity":"brief","n":1.50}`
	a := h("timetravel", body)
	if len(a) != 64 {
		t.Errorf("hash %q is not a hex SHA-256", a)
	}
	for _, same := range []string{
		body,
		` { "complexity" : "brief", "n": 1.50,` + "\n\t" + `"question": "How do vaccines work?" } `,
		`{"question":"How do vaccines work\u003f","complexity":"\u0062rief","n":1.50}`,
	} {
		if h("timetravel", same) != a {
			t.Errorf("%s hashes unlike %s", same, body)
		}
	}
	for _, other := range []struct{ kind, body string }{
		{"ensemble", body},
		{"timetravel", `{"question":"How do vaccines work?","complexity":"detailed","n":1.50}`},
		{"timetravel", `{"question":"How do vaccines work?","complexity":"brief","n":1.5}`},
		{"timetravel", `{"question":"How do vaccines work?","complexity":"brief"}`},
		{"timetravel", `{"question":"How do vaccines work?","complexity":"brief","n":1.50,"model":""}`},
		{"", body},
	} {
		if h(other.kind, other.body) == a {
			t.Errorf("%s %s hashes like %s", other.kind, other.body, body)
		}
	}
	for _, bad := range []string{"", "{", `{"a":1}}`[:5]} {
		if _, err := RequestHash("timetravel", []byte(bad)); err == nil {
			t.Errorf("RequestHash of %q succeeded", bad)
		}
	}
}

func TestBeginCompleteLifecycle(t *testing.T) {
	t.Parallel()
	k, _ := newKeys(t)
	ctx := context.Background()
	if id, err := k.Begin(ctx, "key", "h1"); id != "" || err != nil {
		t.Fatalf("first Begin = %q, %v; want a new reservation", id, err)
	}
	if _, err := k.Begin(ctx, "key", "h1"); !errors.Is(err, ErrInProgress) {
		t.Fatalf("Begin while in progress = %v, want ErrInProgress", err)
	}
	if _, err := k.Begin(ctx, "key", "h2"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Begin with another body while in progress = %v, want ErrMismatch", err)
	}
	if err := k.Complete(ctx, "key", "h1", "job-1"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if id, err := k.Begin(ctx, "key", "h1"); id != "job-1" || err != nil {
			t.Fatalf("Begin after Complete = %q, %v; want job-1", id, err)
		}
	}
	if _, err := k.Begin(ctx, "key", "h2"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Begin with another body after Complete = %v, want ErrMismatch", err)
	}
	// Other keys are independent.
	if id, err := k.Begin(ctx, "key2", "h2"); id != "" || err != nil {
		t.Fatalf("Begin of another key = %q, %v", id, err)
	}
}

func TestTTLs(t *testing.T) {
	t.Parallel()
	k, db := newKeys(t)
	ctx := context.Background()
	pttl := func() time.Duration {
		t.Helper()
		d, err := db.Client.PTTL(ctx, redisKey("key")).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if _, err := k.Begin(ctx, "key", "h"); err != nil {
		t.Fatal(err)
	}
	// A reservation frees itself if its request never ends.
	if d := pttl(); d <= 0 || d > k.pendingTTL {
		t.Errorf("pending reservation PTTL %s, want at most %s", d, k.pendingTTL)
	}
	if err := k.Complete(ctx, "key", "h", "job-1"); err != nil {
		t.Fatal(err)
	}
	if d := pttl(); d > testTTL || d < testTTL-5*time.Second {
		t.Errorf("completed record PTTL %s, want about %s", d, testTTL)
	}
}

func TestAbandon(t *testing.T) {
	t.Parallel()
	k, db := newKeys(t)
	ctx := context.Background()
	if _, err := k.Begin(ctx, "key", "h"); err != nil {
		t.Fatal(err)
	}
	// Abandoning with another body's hash is not this reservation.
	if err := k.Abandon(ctx, "key", "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Begin(ctx, "key", "h"); !errors.Is(err, ErrInProgress) {
		t.Fatalf("after Abandon with another hash: %v, want ErrInProgress still", err)
	}
	if err := k.Abandon(ctx, "key", "h"); err != nil {
		t.Fatal(err)
	}
	if id, err := k.Begin(ctx, "key", "h"); id != "" || err != nil {
		t.Fatalf("Begin after Abandon = %q, %v; want a new reservation", id, err)
	}
	// A completed record stays.
	if err := k.Complete(ctx, "key", "h", "job-1"); err != nil {
		t.Fatal(err)
	}
	if err := k.Abandon(ctx, "key", "h"); err != nil {
		t.Fatal(err)
	}
	if id, err := k.Begin(ctx, "key", "h"); id != "job-1" || err != nil {
		t.Fatalf("Begin after Abandon of a completed record = %q, %v; want job-1", id, err)
	}
	if db.Client.Exists(ctx, redisKey("key")).Val() != 1 {
		t.Error("the completed record is gone")
	}
	// Abandoning a key nobody reserved is fine.
	if err := k.Abandon(ctx, "nobody", "h"); err != nil {
		t.Errorf("Abandon of an unknown key: %v", err)
	}
}

func TestWaitSeesCompletion(t *testing.T) {
	t.Parallel()
	k, db := newKeys(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := k.Begin(ctx, "key", "h"); err != nil {
		t.Fatal(err)
	}
	// The second request, in another process.
	rdb := db.NewClient(t)
	var tries redistest.ScriptCounter
	rdb.AddHook(&tries)
	waiter := New(rdb, testTTL)
	type result struct {
		id  string
		err error
	}
	done := make(chan result, 1)
	go func() {
		id, err := waiter.Wait(ctx, "key", "h", 3*time.Second)
		done <- result{id, err}
	}()
	// Complete once the waiter has found the request in progress and
	// tried again.
	for tries.Load() < 2 {
		select {
		case r := <-done:
			t.Fatalf("Wait returned %q, %v before the first request completed", r.id, r.err)
		case <-ctx.Done():
			t.Fatal("the waiter did not try again")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := k.Complete(ctx, "key", "h", "job-1"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.id != "job-1" || r.err != nil {
			t.Fatalf("Wait = %q, %v; want job-1", r.id, r.err)
		}
	case <-ctx.Done():
		t.Fatal("Wait did not return")
	}
}

func TestWaitGivesUp(t *testing.T) {
	t.Parallel()
	k, _ := newKeys(t)
	ctx := context.Background()
	if _, err := k.Begin(ctx, "key", "h"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	id, err := k.Wait(ctx, "key", "h", 100*time.Millisecond)
	if !errors.Is(err, ErrInProgress) || id != "" {
		t.Fatalf("Wait = %q, %v; want ErrInProgress", id, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > time.Second {
		t.Errorf("Wait gave up after %s, want about 100ms", d)
	}
	// Other outcomes come at once.
	start = time.Now()
	if _, err := k.Wait(ctx, "key", "other", time.Second); !errors.Is(err, ErrMismatch) {
		t.Errorf("Wait with another body = %v, want ErrMismatch", err)
	}
	if id, err := k.Wait(ctx, "fresh", "h", time.Second); id != "" || err != nil {
		t.Errorf("Wait on a new key = %q, %v; want a new reservation", id, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Wait without anything to wait for took %s", d)
	}
	// A cancelled context ends the wait.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := k.Wait(cctx, "key", "h", time.Second); err == nil {
		t.Error("Wait with a cancelled context succeeded")
	}
}

func TestBeginConcurrentOneReservation(t *testing.T) {
	t.Parallel()
	k, db := newKeys(t)
	other := New(db.NewClient(t), testTTL)
	const n = 30
	var wg sync.WaitGroup
	var won, inProgress atomic.Int64
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			kk := k
			if i%2 == 1 {
				kk = other
			}
			id, err := kk.Begin(context.Background(), "key", "h")
			switch {
			case err == nil && id == "":
				won.Add(1)
			case errors.Is(err, ErrInProgress):
				inProgress.Add(1)
			default:
				errs <- fmt.Errorf("Begin %d = %q, %v", i, id, err)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if won.Load() != 1 || inProgress.Load() != n-1 {
		t.Errorf("%d reservations and %d in progress, want 1 and %d", won.Load(), inProgress.Load(), n-1)
	}
}

// The client's key is hashed: keys that Redis Cluster would read as hash
// tags, or that differ only in case, are records of their own.
func TestKeysAreDistinct(t *testing.T) {
	t.Parallel()
	k, _ := newKeys(t)
	ctx := context.Background()
	for i, key := range []string{"{a}", "{a}x", "A", "a", "a b"} {
		if id, err := k.Begin(ctx, key, "h"); id != "" || err != nil {
			t.Errorf("Begin(%q) = %q, %v; want a new reservation", key, id, err)
		}
		if err := k.Complete(ctx, key, "h", fmt.Sprint("job-", i)); err != nil {
			t.Fatal(err)
		}
	}
	if id, _ := k.Begin(ctx, "{a}", "h"); id != "job-0" {
		t.Errorf("Begin({a}) = %q, want job-0", id)
	}
}

// A request whose reservation expired and whose key another body took
// meanwhile cannot overwrite that body's record.
func TestCompleteRefusesAnotherBodysKey(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	k := New(db.Client, time.Hour)
	ctx := t.Context()
	if err := k.Complete(ctx, "k", "hash-b", "job-b"); err != nil {
		t.Fatalf("Complete with no record: %v", err)
	}
	if err := k.Complete(ctx, "k", "hash-a", "job-a"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("late Complete of another body: %v, want ErrMismatch", err)
	}
	if id, err := k.Begin(ctx, "k", "hash-b"); err != nil || id != "job-b" {
		t.Fatalf("Begin after the refused Complete = %q, %v; want job-b", id, err)
	}
}
