package timetravel_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// A process registers the time-travel kind once; the registry then finds
// it for a request's route or a stored job's spec, and shows any job with
// the kind's fields beside the common ones.
func Example() {
	reg := jobkind.NewRegistry()
	reg.Add(timetravel.Kind{})

	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	kind, _ := reg.Kind("timetravel")
	spec, err := kind.Decode([]byte(`{"question":"Which AI model is best?","time_points":["2024-05-01","2023-01-01"],"complexity":"brief"}`), now)
	if err != nil {
		fmt.Println(err)
		return
	}
	env := jobkind.Env{Model: "gpt-4o-mini", Extraction: "gpt-4o-mini"}
	plan, _ := kind.Plan(spec, env)

	// The job as the store would hold it once its snapshots and its
	// aggregation are done.
	j := &job.Job{ID: "0190", Spec: spec, Noun: kind.Noun(), Status: job.StatusCompleted,
		CreatedAt: now, Deadline: now.Add(2 * time.Minute), FinishedAt: now.Add(3 * time.Second)}
	texts := []string{"GPT-4 leads.", "GPT-4o is out."}
	for i, m := range plan {
		j.Members = append(j.Members, job.Member{Index: i, Label: m.Label, Ref: m.Ref, Status: job.MemberCompleted,
			Text: texts[i], Model: m.Request.Model, Attempts: 1,
			StartedAt: now.Add(100 * time.Millisecond).UnixMilli(), CompletedAt: now.Add(time.Duration(1+i) * time.Second).UnixMilli()})
	}
	j.Result = &job.Result{StartedAt: now.Add(2 * time.Second).UnixMilli(), Parts: []job.Part{
		{Name: "key_changes", Value: json.RawMessage(`[{"from":"2023-01-01","to":"2024-05-01","from_label":"January 2023","to_label":"May 2024","changes":["GPT-4o released"]}]`), MS: 400},
		{Name: "narrative", Text: "GPT-4 gave way to GPT-4o.", MS: 900},
	}}

	v, err := reg.View(j)
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Println(string(b))
	// Output:
	// {
	//   "job_id": "0190",
	//   "kind": "timetravel",
	//   "status": "completed",
	//   "question": "Which AI model is best?",
	//   "cache": "use",
	//   "cached": false,
	//   "created_at": "2026-11-26T10:00:00Z",
	//   "deadline": "2026-11-26T10:02:00Z",
	//   "finished_at": "2026-11-26T10:00:03Z",
	//   "timings": {
	//     "fan_in_ms": 0,
	//     "key_changes_ms": 400,
	//     "narrative_ms": 900,
	//     "queue_wait_ms": 100,
	//     "snapshot_ms": [
	//       900,
	//       1900
	//     ],
	//     "snapshots_ms": 1900,
	//     "total_ms": 3000
	//   },
	//   "errors": [],
	//   "complexity": "brief",
	//   "force_time_travel": false,
	//   "snapshots": [
	//     {
	//       "index": 0,
	//       "label": "January 2023",
	//       "status": "completed",
	//       "text": "GPT-4 leads.",
	//       "model": "gpt-4o-mini",
	//       "attempts": 1,
	//       "started_at_ms": 1795687200100,
	//       "completed_at_ms": 1795687201000,
	//       "date": "2023-01-01"
	//     },
	//     {
	//       "index": 1,
	//       "label": "May 2024",
	//       "status": "completed",
	//       "text": "GPT-4o is out.",
	//       "model": "gpt-4o-mini",
	//       "attempts": 1,
	//       "started_at_ms": 1795687200100,
	//       "completed_at_ms": 1795687202000,
	//       "date": "2024-05-01"
	//     }
	//   ],
	//   "key_changes": [
	//     {
	//       "from": "2023-01-01",
	//       "to": "2024-05-01",
	//       "from_label": "January 2023",
	//       "to_label": "May 2024",
	//       "changes": [
	//         "GPT-4o released"
	//       ]
	//     }
	//   ],
	//   "narrative": "GPT-4 gave way to GPT-4o."
	// }
}
