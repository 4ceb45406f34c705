package timetravel

import (
	"errors"
	"reflect"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// threeSnaps are three chronological snapshots.
var threeSnaps = []job.Member{
	{Index: 0, Label: "January 2023", Ref: map[string]string{"date": "2023-01-01"}, Status: job.MemberCompleted, Text: "GPT-3.5 leads."},
	{Index: 1, Label: "May 2024", Ref: map[string]string{"date": "2024-05-01"}, Status: job.MemberCompleted, Text: "GPT-4o is out."},
	{Index: 2, Label: "today (November 26, 2026)", Ref: map[string]string{"date": "2026-11-26"}, Status: job.MemberCompleted, Text: "Many strong models."},
}

// fourSnaps have two snapshots in 2023.
var fourSnaps = []job.Member{
	{Index: 0, Label: "January 2023", Ref: map[string]string{"date": "2023-01-01"}, Status: job.MemberCompleted},
	{Index: 1, Label: "June 15, 2023", Ref: map[string]string{"date": "2023-06-15"}, Status: job.MemberCompleted},
	{Index: 2, Label: "May 2024", Ref: map[string]string{"date": "2024-05-01"}, Status: job.MemberCompleted},
	{Index: 3, Label: "today (November 26, 2026)", Ref: map[string]string{"date": "2026-11-26"}, Status: job.MemberCompleted},
}

// kc4 builds the expected key changes for fourSnaps (nil: none).
func kc4(changes ...[]string) []KeyChange {
	out := make([]KeyChange, 3)
	for i := range out {
		c := changes[i]
		if c == nil {
			c = []string{}
		}
		out[i] = KeyChange{From: DateOf(fourSnaps[i]), To: DateOf(fourSnaps[i+1]), FromLabel: fourSnaps[i].Label, ToLabel: fourSnaps[i+1].Label, Changes: c}
	}
	return out
}

// kc builds the expected key changes for threeSnaps.
func kc(first, second []string) []KeyChange {
	return []KeyChange{
		{From: "2023-01-01", To: "2024-05-01", FromLabel: "January 2023", ToLabel: "May 2024", Changes: first},
		{From: "2024-05-01", To: "2026-11-26", FromLabel: "May 2024", ToLabel: "today (November 26, 2026)", Changes: second},
	}
}

func TestParseKeyChanges(t *testing.T) {
	t.Parallel()
	wellFormed := `{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":["GPT-4o released","multimodal"]},{"from":"2024-05-01","to":"2026-11-26","changes":["more competitors"]}]}`
	tests := []struct {
		name   string
		answer string
		snaps  []job.Member
		want   []KeyChange
	}{
		{
			name:   "well-formed",
			answer: wellFormed,
			want:   kc([]string{"GPT-4o released", "multimodal"}, []string{"more competitors"}),
		},
		{
			name:   "code fence",
			answer: "```json\n" + wellFormed + "\n```",
			want:   kc([]string{"GPT-4o released", "multimodal"}, []string{"more competitors"}),
		},
		{
			name:   "prose around",
			answer: "Here are the changes you asked for:\n\n" + wellFormed + "\n\nLet me know if you need more.",
			want:   kc([]string{"GPT-4o released", "multimodal"}, []string{"more competitors"}),
		},
		{
			name:   "out of order",
			answer: `{"transitions":[{"from":"2024-05-01","to":"2026-11-26","changes":["second"]},{"from":"2023-01-01","to":"2024-05-01","changes":["first"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "by label, any case and spacing",
			answer: `{"transitions":[{"from":"january 2023","to":" May 2024 ","changes":["first"]},{"from":"MAY 2024","to":"Today (November 26, 2026)","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "date and label mixed",
			answer: `{"transitions":[{"from":"2023-01-01","to":"May 2024","changes":["first"]}]}`,
			want:   kc([]string{"first"}, []string{}),
		},
		{
			name:   "missing pair gets an empty list",
			answer: `{"transitions":[{"from":"2024-05-01","to":"2026-11-26","changes":["second"]}]}`,
			want:   kc([]string{}, []string{"second"}),
		},
		{
			name: "unknown transitions ignored",
			answer: `{"transitions":[
				{"from":"2022-01-01","to":"2023-01-01","changes":["before time"]},
				{"from":"2023-01-01","to":"2024-05-01","changes":["first"]},
				{"from":"2023-01-01","to":"2026-11-26","changes":["skips a snapshot"]},
				{"from":"2026-11-26","to":"2027-01-01","changes":["after the last"]},
				{"from":"2024-05-01","to":"2023-01-01","changes":["backwards"]}
			]}`,
			want: kc([]string{"first"}, []string{}),
		},
		{
			name:   "empty and blank changes dropped, others trimmed",
			answer: `{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":["", "  ", " GPT-4o \n", "\t"]},{"from":"2024-05-01","to":"2026-11-26","changes":[]}]}`,
			want:   kc([]string{"GPT-4o"}, []string{}),
		},
		{
			name:   "null changes",
			answer: `{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":null}]}`,
			want:   kc([]string{}, []string{}),
		},
		{
			name:   "unnamed transitions taken in order",
			answer: `{"transitions":[{"changes":["first"]},{"changes":["second"]},{"changes":["one too many"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "repeated transition merges its changes",
			answer: `{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":["a"]},{"from":"2023-01-01","to":"2024-05-01","changes":["b"]}]}`,
			want:   kc([]string{"a", "b"}, []string{}),
		},
		{
			name:   "labels in other case, without their parenthesis",
			answer: `{"transitions":[{"from":"JANUARY 2023","to":"may 2024","changes":["first"]},{"from":"May  2024","to":"Today","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "abbreviated months",
			answer: `{"transitions":[{"from":"Jan 2023","to":"May 2024","changes":["first"]},{"from":"May 2024","to":"Nov 2026","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "months by number",
			answer: `{"transitions":[{"from":"2023-01","to":"2024/05","changes":["first"]},{"from":"05/2024","to":"11-2026","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "days in other formats",
			answer: `{"transitions":[{"from":"January 1, 2023","to":"1 May 2024","changes":["first"]},{"from":"May 1st, 2024","to":"2026/11/26","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "day and month either way round",
			answer: `{"transitions":[{"from":"01/01/2023","to":"01/05/2024","changes":["first"]},{"from":"05/01/2024","to":"26/11/2026","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "dates with a time",
			answer: `{"transitions":[{"from":"2023-01-01T00:00:00Z","to":"2024-05-01T00:00:00Z","changes":["first"]}]}`,
			want:   kc([]string{"first"}, []string{}),
		},
		{
			name:   "years",
			answer: `{"transitions":[{"from":"2023","to":"2024","changes":["first"]},{"from":"2024","to":"2026","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "letters",
			answer: `{"transitions":[{"from":"A","to":"B","changes":["first"]},{"from":"b","to":"c","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "numbers from 1",
			answer: `{"transitions":[{"from":"1","to":"2","changes":["first"]},{"from":"2","to":"3","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "numbers from 0",
			answer: `{"transitions":[{"from":"1","to":"2","changes":["second"]},{"from":"0","to":"1","changes":["first"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "JSON numbers",
			answer: `{"transitions":[{"from":1,"to":2,"changes":["first"]},{"from":2,"to":3,"changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "ordinals",
			answer: `{"transitions":[{"from":"first","to":"second","changes":["first"]},{"from":"Second","to":"last","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "numbered snapshots and ordinal numbers",
			answer: `{"transitions":[{"from":"Snapshot 1","to":"Snapshot 2","changes":["first"]},{"from":"the 2nd answer","to":"T3","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "names containing the label",
			answer: `{"transitions":[{"from":"the answer as of January 2023","to":"as of May 2024","changes":["first"]}]}`,
			want:   kc([]string{"first"}, []string{}),
		},
		{
			name:   "objects as names",
			answer: `{"transitions":[{"from":{"date":"2024-05-01","label":"May 2024"},"to":{"date":"2026-11-26"},"changes":["second"]}]}`,
			want:   kc([]string{}, []string{"second"}),
		},
		{
			name:   "by position when no name can be read",
			answer: `{"transitions":[{"from":"before","to":"after","changes":["first"]},{"from":"after","to":"much later","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "by position around a named transition",
			answer: `{"transitions":[{"from":"2024-05-01","to":"2026-11-26","changes":["second"]},{"from":"the past","to":"the middle","changes":["first"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "by position, a name read fits its pair",
			answer: `{"transitions":[{"from":"the past","to":"May 2024","changes":["first"]},{"from":"the middle","to":"the end","changes":["second"]}]}`,
			want:   kc([]string{"first"}, []string{"second"}),
		},
		{
			name:   "a contradicting name is not placed by position",
			answer: `{"transitions":[{"from":"2019-01-01","to":"2020-01-01","changes":["elsewhere"]},{"from":"the middle","to":"the end","changes":["first"]}]}`,
			want:   kc([]string{"first"}, []string{}),
		},
		{
			name:   "unreadable names with one transition too many are left out",
			answer: `{"transitions":[{"from":"before","to":"after","changes":["x"]},{"from":"2023-01-01","to":"2024-05-01","changes":["first"]},{"from":"after","to":"later","changes":["y"]}]}`,
			want:   kc([]string{"first"}, []string{}),
		},
		{
			name:   "a year that fits one pair through the other end",
			answer: `{"transitions":[{"from":"2023","to":"May 2024","changes":["second"]}]}`,
			snaps:  fourSnaps,
			want:   kc4(nil, []string{"second"}, nil),
		},
		{
			name:   "a year of two snapshots alone is left out",
			answer: `{"transitions":[{"from":"2023","changes":["which?"]},{"from":"May 2024","to":"today","changes":["third"]}]}`,
			snaps:  fourSnaps,
			want:   kc4(nil, nil, []string{"third"}),
		},
		{
			name:   "a month and day without the year",
			answer: `{"transitions":[{"from":"June 15","to":"May 2024","changes":["second"]}]}`,
			snaps:  fourSnaps,
			want:   kc4(nil, []string{"second"}, nil),
		},
		{
			name:   "two snapshots",
			answer: `{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":["x"]}]}`,
			snaps:  threeSnaps[:2],
			want:   kc([]string{"x"}, nil)[:1],
		},
		{
			name:   "one snapshot has no pairs",
			answer: `{"transitions":[]}`,
			snaps:  threeSnaps[:1],
			want:   []KeyChange{},
		},
		{
			name:   "no snapshots",
			answer: `{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":["x"]}]}`,
			snaps:  []job.Member{},
			want:   []KeyChange{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			snaps := tt.snaps
			if snaps == nil {
				snaps = threeSnaps
			}
			got, err := ParseKeyChanges(tt.answer, snaps)
			if err != nil {
				t.Fatalf("ParseKeyChanges: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n%#v\nwant\n%#v", got, tt.want)
			}
		})
	}
}

func TestParseKeyChangesMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		answer string
	}{
		{"empty", ""},
		{"plain prose", "Nothing much changed between the answers."},
		{"JSON list, not an object", `[{"from":"2023-01-01","to":"2024-05-01","changes":["x"]}]`},
		{"braces reversed", "} nothing {"},
		{"broken JSON", `{"transitions":[{"from":"2023-01-01",}]}`},
		{"truncated JSON", `{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":["x"]}`},
		{"two objects", `{"transitions":[]} {"transitions":[]}`},
		{"no transitions", `{"changes":["x"]}`},
		{"transitions null", `{"transitions":null}`},
		{"transitions of the wrong type", `{"transitions":"none"}`},
		{"changes of the wrong type", `{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":"x"}]}`},
		{"empty transitions", `{"transitions":[]}`},
		{"no transition matches", `{"transitions":[{"from":"2020-01-01","to":"2021-01-01","changes":["x"]},{"from":"June 2022","to":"2023-01-01","changes":["y"]}]}`},
		{"letters beyond the snapshots", `{"transitions":[{"from":"X","to":"Y","changes":["x"]},{"from":"Y","to":"Z","changes":["y"]}]}`},
		{"numbers beyond the snapshots", `{"transitions":[{"from":"7","to":"8","changes":["x"]},{"from":"8","to":"9","changes":["y"]}]}`},
		{"backwards only", `{"transitions":[{"from":"B","to":"A","changes":["x"]},{"from":"May 2024","to":"January 2023","changes":["y"]}]}`},
		{"unreadable names, not one per pair", `{"transitions":[{"from":"before","to":"after","changes":["x"]},{"from":"after","to":"later","changes":["y"]},{"from":"later","to":"last of all","changes":["z"]}]}`},
		{"a range of years", `{"transitions":[{"from":"2023-2024","to":"2024-2026","changes":["x"]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseKeyChanges(tt.answer, threeSnaps)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error = %v, want ErrMalformed", err)
			}
			if got != nil {
				t.Errorf("got %+v alongside the error", got)
			}
		})
	}
}

// FuzzParseKeyChanges: the parser never panics, and when it succeeds it
// returns one entry per consecutive pair of snapshots, in order.
func FuzzParseKeyChanges(f *testing.F) {
	for _, s := range []string{
		`{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":["a"]},{"from":"2024-05-01","to":"2026-11-26","changes":["b"]}]}`,
		"```json\n{\"transitions\":[{\"from\":\"may 2024\",\"to\":\"today (november 26, 2026)\",\"changes\":[\"b\"]}]}\n```",
		`{"transitions":[{"changes":["a"]},{"changes":[]},{"changes":null}]}`,
		`{"transitions":null}`,
		`{"transitions":[{"from":"x","to":"y"}]}`,
		`} {`,
		``,
		`{"transitions":[{"from":"A","to":"B","changes":["a"]},{"from":"2nd","to":"last","changes":["b"]}]}`,
		`{"transitions":[{"from":0,"to":1,"changes":["a"]},{"from":{"date":"2023"},"to":[1],"changes":["b"]}]}`,
		`{"transitions":[{"from":"Jan 2023","to":"05/2024","changes":["a"]},{"from":"the past","to":"then","changes":["b"]}]}`,
		`{"transitions":[{"from":"26th of November","to":"Q1 2023 (2023-2024)","changes":["a"]}]}`,
		`{"transitions":[{"from":"T999","to":"9999-99-99","changes":["a"]},{"from":"((today","to":")","changes":["b"]}]}`,
	} {
		f.Add(s, 3)
		f.Add(s, 1)
		f.Add(s, 7)
	}
	f.Fuzz(func(t *testing.T, answer string, n int) {
		n = ((n % 5) + 5) % 5 // 0..4 snapshots
		snaps := fourSnaps[:n]
		got, err := ParseKeyChanges(answer, snaps)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if want := max(len(snaps)-1, 0); len(got) != want {
			t.Fatalf("%d entries for %d snapshots", len(got), len(snaps))
		}
		for i, c := range got {
			if c.From != DateOf(snaps[i]) || c.To != DateOf(snaps[i+1]) {
				t.Fatalf("entry %d is %s→%s, want %s→%s", i, c.From, c.To, DateOf(snaps[i]), DateOf(snaps[i+1]))
			}
			if c.FromLabel != snaps[i].Label || c.ToLabel != snaps[i+1].Label {
				t.Fatalf("entry %d has labels %q→%q", i, c.FromLabel, c.ToLabel)
			}
			if c.Changes == nil {
				t.Fatalf("entry %d has nil changes", i)
			}
			for _, ch := range c.Changes {
				if ch == "" {
					t.Fatalf("entry %d has an empty change", i)
				}
			}
		}
	})
}
