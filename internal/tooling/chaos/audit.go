package chaos

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

// eventAggregateStarted announces an aggregation attempt; an attempt after
// the first voids the narrative text before it (docs/api.md).
const eventAggregateStarted = client.EventAggregateStarted

// Kinds of duplicate that auditEvents counts.
const (
	// DupEventID: one stream entry twice in one read of the stream.
	DupEventID = "event id"
	// DupSnapshotEnd: snapshot.completed or snapshot.failed for an index
	// that had ended already, with no snapshot.started of that index
	// between (a new attempt may end again; the same attempt may not).
	DupSnapshotEnd = "snapshot end"
	// DupJobEnd: job.completed more than once.
	DupJobEnd = "job.completed"
	// DupKeyChanges: key_changes.completed or key_changes.failed more than
	// once, whatever came between (an aggregation re-run included).
	DupKeyChanges = "key_changes"
	// DupNarrative: narrative.completed or narrative.failed more than once,
	// whatever came between.
	DupNarrative = "narrative"
	// DupNarrativeText: the narrative.delta text after the last
	// aggregate.started is not the narrative.completed text: a client
	// that follows the protocol shows another narrative (typically the
	// dead attempt's deltas followed by the new attempt's).
	DupNarrativeText = "narrative text"
)

// Audit is what one job's whole event stream shows.
type Audit struct {
	// Duplicates counts the events that break "exactly once", by kind in
	// Kinds.
	Duplicates int            `json:"duplicates"`
	Kinds      map[string]int `json:"kinds,omitempty"`
	// Examples describe the first few duplicates.
	Examples []string `json:"examples,omitempty"`
	// Late counts events after the first job.completed other than the
	// webhook outcome, the only events the protocol puts there.
	Late int `json:"late,omitempty"`
	// Status is the status of the first job.completed; empty without one.
	Status string `json:"status,omitempty"`
	// TimePoints is the number of time points job.accepted announced.
	TimePoints int `json:"time_points"`
	// Cached counts the answers served from the caches: snapshots, key
	// changes and narrative (provider calls a fault-free run does not make).
	Cached int `json:"cached,omitempty"`
	// AggregateAttempts counts aggregate.started events.
	AggregateAttempts int `json:"aggregate_attempts,omitempty"`
}

func (a *Audit) dup(kind, format string, args ...any) {
	a.Duplicates++
	if a.Kinds == nil {
		a.Kinds = map[string]int{}
	}
	a.Kinds[kind]++
	if len(a.Examples) < 3 {
		a.Examples = append(a.Examples, kind+": "+fmt.Sprintf(format, args...))
	}
}

// auditEvents checks one job's events, in stream order, for duplicated
// terminal and aggregation events (see the Dup kinds).
func auditEvents(evs []client.Event) Audit {
	var a Audit
	seen := map[string]bool{}
	ended := map[int]string{} // index → id of the event that ended it, until a new start
	var keyChanges, narratives, jobEnds int
	var deltas strings.Builder
	deltaSeen := false
	for _, ev := range evs {
		if ev.ID != "" {
			if seen[ev.ID] {
				a.dup(DupEventID, "%s %s", ev.Name, ev.ID)
				continue
			}
			seen[ev.ID] = true
		}
		var d struct {
			Index      *int              `json:"index"`
			Text       string            `json:"text"`
			Cached     bool              `json:"cached"`
			Status     string            `json:"status"`
			TimePoints []json.RawMessage `json:"time_points"`
		}
		_ = json.Unmarshal(ev.Data, &d)
		if jobEnds > 0 && ev.Name != client.EventWebhookDelivered && ev.Name != client.EventWebhookFailed {
			a.Late++
		}
		switch ev.Name {
		case client.EventJobAccepted:
			a.TimePoints = len(d.TimePoints)
		case client.EventSnapshotStarted:
			if d.Index != nil {
				delete(ended, *d.Index)
			}
		case client.EventSnapshotCompleted, client.EventSnapshotFailed:
			if d.Index == nil {
				break
			}
			if prev, ok := ended[*d.Index]; ok {
				a.dup(DupSnapshotEnd, "snapshot %d ended by %s and again by %s %s", *d.Index, prev, ev.Name, ev.ID)
			}
			ended[*d.Index] = ev.ID
			if d.Cached && ev.Name == client.EventSnapshotCompleted {
				a.Cached++
			}
		case client.EventKeyChangesCompleted, client.EventKeyChangesFailed:
			if keyChanges++; keyChanges > 1 {
				a.dup(DupKeyChanges, "%s %s is key changes' end number %d", ev.Name, ev.ID, keyChanges)
			}
			if d.Cached {
				a.Cached++
			}
		case eventAggregateStarted:
			a.AggregateAttempts++
			deltas.Reset()
			deltaSeen = false
		case client.EventNarrativeDelta:
			deltas.WriteString(d.Text)
			deltaSeen = true
		case client.EventNarrativeCompleted, client.EventNarrativeFailed:
			if narratives++; narratives > 1 {
				a.dup(DupNarrative, "%s %s is the narrative's end number %d", ev.Name, ev.ID, narratives)
			}
			if d.Cached {
				a.Cached++
			}
			if ev.Name == client.EventNarrativeCompleted && narratives == 1 && deltaSeen &&
				strings.TrimSpace(deltas.String()) != strings.TrimSpace(d.Text) {
				a.dup(DupNarrativeText, "deltas make %d characters, narrative.completed %s has %d",
					len(strings.TrimSpace(deltas.String())), ev.ID, len(strings.TrimSpace(d.Text)))
			}
		case client.EventJobCompleted:
			if jobEnds++; jobEnds > 1 {
				a.dup(DupJobEnd, "job.completed %s is number %d", ev.ID, jobEnds)
			} else {
				a.Status = d.Status
			}
		}
	}
	return a
}

// faultFreeCalls is the number of provider calls a job makes when nothing
// fails: one per time point, the key changes and the narrative, less what
// the caches answered. Without a job.accepted (the job's data was lost) the
// default four time points are assumed.
func (a Audit) faultFreeCalls() int {
	tp := a.TimePoints
	if tp == 0 {
		tp = defaultTimePoints
	}
	return max(tp+2-a.Cached, 0)
}

// defaultTimePoints is the api's default number of time points.
const defaultTimePoints = 4

// Exactness compares what a live reader received, across its
// reconnections, with the job's stored stream up to its first
// job.completed (where live readers stop).
type Exactness struct {
	// Duplicates counts events received more than once.
	Duplicates int `json:"duplicates"`
	// Missing counts stored events never received.
	Missing int `json:"missing"`
	// Phantom counts events received that the stored stream lacks (lost
	// by Redis after they were sent).
	Phantom int `json:"phantom"`
	// Reordered is set when the events received, once the above are set
	// aside, came in another order than stored.
	Reordered bool `json:"reordered,omitempty"`
}

// Exact reports whether every event came exactly once, in order.
func (e Exactness) Exact() bool {
	return e.Duplicates == 0 && e.Missing == 0 && e.Phantom == 0 && !e.Reordered
}

// exactness compares live (what a reader got) with stored (the whole
// stream read after the fact).
func exactness(live, stored []client.Event) Exactness {
	var want []string
	for _, ev := range stored {
		want = append(want, ev.ID)
		if ev.Terminal() {
			break
		}
	}
	inStored := map[string]bool{}
	for _, id := range want {
		inStored[id] = true
	}
	var e Exactness
	got := map[string]bool{}
	var order []string
	for _, ev := range live {
		switch {
		case got[ev.ID]:
			e.Duplicates++
		case !inStored[ev.ID]:
			e.Phantom++
			got[ev.ID] = true
		default:
			got[ev.ID] = true
			order = append(order, ev.ID)
		}
	}
	var wantOrder []string
	for _, id := range want {
		if got[id] {
			wantOrder = append(wantOrder, id)
		} else {
			e.Missing++
		}
	}
	e.Reordered = strings.Join(order, ",") != strings.Join(wantOrder, ",")
	return e
}

// isStuck reports whether a job is stuck: checked after its deadline plus
// the grace second, it was not in a terminal status. A job whose data is
// gone (404) is not stuck but lost; a job the api could not answer for is
// stuck, as nothing shows that it ended.
func isStuck(status string, lost bool, deadline, checked time.Time) bool {
	if lost || !checked.After(deadline.Add(stuckGrace)) {
		return false
	}
	switch status {
	case "completed", "partial", "failed", "canceled":
		return false
	}
	return true
}

// stuckGrace is how long past its deadline a job may take to end.
const stuckGrace = time.Second
