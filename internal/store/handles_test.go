package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/store"
)

// handle makes a handle of b's job for owner.
func handle(t *testing.T, b bundle, id, owner string) *job.Job {
	t.Helper()
	spec := b.job.Spec
	spec.Owner = owner
	h := &job.Job{ID: id, Spec: spec, CreatedAt: time.Now(), Deadline: b.job.Deadline}
	if err := b.store.CreateHandle(context.Background(), h, b.job.ID); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestSharedJobDetachAndCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, 2)
	const h1, h2 = "0190aaaa-0000-7000-8000-0000000000b1", "0190aaaa-0000-7000-8000-0000000000b2"
	handle(t, b, h1, "bob")
	handle(t, b, h2, "carol")

	// A handle's head names its owner and the work.
	hd, err := b.store.Head(ctx, h1)
	if err != nil || hd.Owner != "bob" || hd.Work != b.job.ID || hd.Status != job.StatusQueued || hd.Marker != "" {
		t.Fatalf("head of a handle: %+v %v", hd, err)
	}
	// The handle resolves to the work under its own id and owner.
	v, err := b.store.Resolve(ctx, h1)
	if err != nil || v.ID != h1 || v.Spec.Owner != "bob" || v.Status != job.StatusQueued || len(v.Members) != 2 {
		t.Fatalf("resolve: %+v %v", v, err)
	}

	// The first two callers to cancel only detach.
	for _, id := range []string{h1, b.job.ID} {
		last, err := b.store.Detach(ctx, b.job.ID, id)
		if err != nil || last {
			t.Fatalf("detach %s: last %v, %v; want a detach", id, last, err)
		}
	}
	if _, err := b.store.Detach(ctx, b.job.ID, h1); !errors.Is(err, store.ErrDetached) {
		t.Fatalf("detaching twice: %v, want ErrDetached", err)
	}
	hd, _ = b.store.Head(ctx, h1)
	if hd.Status != job.StatusCanceled || hd.Marker == "" {
		t.Fatalf("head after detaching: %+v", hd)
	}
	if v, _ := b.store.Resolve(ctx, h1); v.Status != job.StatusCanceled || v.Error != job.CanceledByClient {
		t.Fatalf("a detached caller sees %s %q", v.Status, v.Error)
	}
	if st, _ := b.store.Status(ctx, b.job.ID); st != job.StatusQueued {
		t.Fatalf("the work is %s after two of three callers left, want it running on", st)
	}
	if s, _ := b.store.Settled(ctx, []string{h1, h2, b.job.ID, "0190aaaa-0000-7000-8000-0000000000ff"}); s[0] != true || s[1] != false || s[2] != true || s[3] != true {
		t.Fatalf("settled %v, want [true false true true]", s)
	}
	// The work's stream carries the markers, which name the callers.
	evs, err := events.Read(ctx, b.db.Client, b.job.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	var marked []string
	for _, e := range evs {
		if e.Type == events.HolderDetached {
			marked = append(marked, e.ID)
		}
	}
	if len(marked) != 2 || marked[0] != hd.Marker {
		t.Fatalf("markers %v, want two, the first %s", marked, hd.Marker)
	}

	// The last caller cancels the work; nobody joins it any more.
	last, err := b.store.Detach(ctx, b.job.ID, h2)
	if err != nil || !last {
		t.Fatalf("the last caller: last %v, %v", last, err)
	}
	late := &job.Job{ID: "0190aaaa-0000-7000-8000-0000000000b3", Spec: b.job.Spec, CreatedAt: time.Now(), Deadline: b.job.Deadline}
	if err := b.store.CreateHandle(ctx, late, b.job.ID); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("joining a job being canceled: %v, want ErrClosed", err)
	}
	if err := b.store.Finish(ctx, b.job.ID, job.StatusCanceled, job.CanceledByClient, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Detach(ctx, b.job.ID, h2); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("after the end: %v, want ErrClosed", err)
	}
}

// A job nobody joined is canceled by its caller at once.
func TestUnsharedJobCancel(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	last, err := b.store.Detach(context.Background(), b.job.ID, b.job.ID)
	if err != nil || !last {
		t.Fatalf("cancel of an unshared job: last %v, %v", last, err)
	}
	if _, err := b.store.Detach(context.Background(), b.job.ID, b.job.ID); !errors.Is(err, store.ErrDetached) {
		t.Fatalf("a second cancel: %v, want ErrDetached", err)
	}
}
