package breaker

import (
	"context"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/tooling/testclock"
)

// Peek sees what the breakers' callers see: closed when never used, open
// (with its end) once tripped, half-open when the open time has passed.
func TestPeek(t *testing.T) {
	db := redistest.New(t)
	bu := &bundle{db: db, clock: testclock.New(epoch)}
	b, _, set := bu.newProcess(t, db.Client, nil)
	trip(t, b)
	store := set.store
	tests := []struct {
		name  string
		at    time.Time
		names []string
		want  []State
	}{
		{"never used", bu.clock.Now(), []string{"p/other"}, []State{StateClosed}},
		{"tripped", bu.clock.Now(), []string{"p/m", "p/other"}, []State{StateOpen, StateClosed}},
		{"past its open time", bu.clock.Now().Add(time.Hour), []string{"p/m"}, []State{StateHalfOpen}},
		{"none", bu.clock.Now(), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := store.Peek(context.Background(), tt.at, tt.names)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d statuses, want %d", len(got), len(tt.want))
			}
			for i, st := range got {
				if st.Name != tt.names[i] || st.State != tt.want[i] {
					t.Errorf("%d: %+v, want %s %s", i, st, tt.names[i], tt.want[i])
				}
				if (st.State == StateOpen) != !st.OpenUntil.IsZero() {
					t.Errorf("%s: open until %v in state %s", st.Name, st.OpenUntil, st.State)
				}
			}
		})
	}
}
