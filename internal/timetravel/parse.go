package timetravel

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// ErrMalformed means the model's key-changes answer could not be used.
var ErrMalformed = errors.New("malformed key-changes answer")

type transitionsDoc struct {
	Transitions []struct {
		From    string   `json:"from"`
		To      string   `json:"to"`
		Changes []string `json:"changes"`
	} `json:"transitions"`
}

// ParseKeyChanges reads the model's answer to the KeyChanges prompt for the
// given snapshots (chronological) and returns one KeyChange per consecutive
// pair, in order. It tolerates code fences and text around the JSON object,
// and transitions given out of order or by label instead of date; a pair the
// model left out gets an empty list. It fails with ErrMalformed when no
// usable JSON object is found. It never panics.
func ParseKeyChanges(answer string, snaps []job.Snapshot) ([]job.KeyChange, error) {
	raw := extractObject(answer)
	if raw == "" {
		return nil, fmt.Errorf("%w: no JSON object in %q", ErrMalformed, clip(answer, 120))
	}
	var doc transitionsDoc
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if doc.Transitions == nil {
		return nil, fmt.Errorf("%w: no \"transitions\" list", ErrMalformed)
	}
	// Resolve a date or a label to a snapshot position.
	pos := map[string]int{}
	for i, s := range snaps {
		pos[s.Date] = i
		pos[strings.ToLower(strings.TrimSpace(s.Label))] = i
	}
	lookup := func(k string) (int, bool) {
		if i, ok := pos[strings.TrimSpace(k)]; ok {
			return i, true
		}
		i, ok := pos[strings.ToLower(strings.TrimSpace(k))]
		return i, ok
	}
	out := make([]job.KeyChange, 0, max(len(snaps)-1, 0))
	for i := 0; i+1 < len(snaps); i++ {
		out = append(out, job.KeyChange{
			From: snaps[i].Date, To: snaps[i+1].Date,
			FromLabel: snaps[i].Label, ToLabel: snaps[i+1].Label,
			Changes: []string{},
		})
	}
	matched := 0
	for k, t := range doc.Transitions {
		slot := -1
		if from, ok := lookup(t.From); ok && from < len(out) {
			if to, ok := lookup(t.To); !ok || to == from+1 {
				slot = from
			}
		}
		if slot < 0 && t.From == "" && t.To == "" && k < len(out) {
			slot = k // unnamed transitions are taken in order
		}
		if slot < 0 {
			continue
		}
		for _, c := range t.Changes {
			if c = strings.TrimSpace(c); c != "" {
				out[slot].Changes = append(out[slot].Changes, c)
			}
		}
		matched++
	}
	if matched == 0 && len(out) > 0 {
		return nil, fmt.Errorf("%w: no transition matches the snapshots' dates", ErrMalformed)
	}
	return out, nil
}

// extractObject returns the outermost {...} of s, skipping code fences and
// surrounding prose; empty when there is none.
func extractObject(s string) string {
	start := strings.IndexByte(s, '{')
	end := strings.LastIndexByte(s, '}')
	if start < 0 || end < start {
		return ""
	}
	return s[start : end+1]
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
