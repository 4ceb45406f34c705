package monitoring

import (
	"context"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// Samples of any kind, and those recorded before kinds existed, come back
// from Redis as recorded, newest first, within the window.
func TestRecordRecent(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	st := New(db.Client)
	ctx := context.Background()
	now := time.Date(2025, time.June, 15, 12, 0, 0, 0, time.UTC)
	// An entry as written before kinds existed.
	old := `{"job_id":"old","status":"completed","at_ms":` + strconv.FormatInt(now.Add(-2*time.Minute).UnixMilli(), 10) +
		`,"stages":{"snapshots":900,"total":1000},"snapshots":[500,900]}`
	if err := db.Client.LPush(ctx, Key, old).Err(); err != nil {
		t.Fatal(err)
	}
	samples := []Sample{
		{JobID: "tt", Status: "completed", At: now.Add(-time.Minute).UnixMilli(), Noun: "snapshot",
			Stages: map[string]int64{"snapshots": 900, "key_changes": 100, "total": 1000}, Members: []int64{700}},
		{JobID: "ens", Status: "partial", At: now.UnixMilli(), Noun: "answer",
			Stages: map[string]int64{"answers": 900, "synthesis": 100, "total": 1000}, Members: []int64{800, 900}},
		{JobID: "ancient", Status: "completed", At: now.Add(-2 * time.Hour).UnixMilli(), Stages: map[string]int64{"total": 1}},
	}
	for _, s := range samples {
		if err := st.Record(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.Recent(ctx, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := []Sample{samples[1], samples[0], {JobID: "old", Status: "completed", At: now.Add(-2 * time.Minute).UnixMilli(),
		Stages: map[string]int64{"snapshots": 900, "total": 1000}, Members: []int64{500, 900}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("recent:\n got %+v\nwant %+v", got, want)
	}
	s := Stats(got)
	if s["snapshot"].Count != 3 || s["answer"].Count != 2 || s["synthesis"].Count != 1 {
		t.Errorf("stats %+v", s)
	}
}
