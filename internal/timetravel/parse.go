package timetravel

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// ErrMalformed means the model's key-changes answer could not be used.
var ErrMalformed = errors.New("malformed key-changes answer")

type transitionsDoc struct {
	Transitions []struct {
		From    periodName `json:"from"`
		To      periodName `json:"to"`
		Changes []string   `json:"changes"`
	} `json:"transitions"`
}

// periodName is how a transition names a period: a string as asked, or a
// number ("from": 1), or an object of strings ({"date": ..., "label": ...})
// as models sometimes write it. Anything else names nothing.
type periodName string

func (p *periodName) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*p = periodName(s)
		return nil
	}
	var n json.Number
	if json.Unmarshal(b, &n) == nil {
		*p = periodName(n.String())
		return nil
	}
	var obj map[string]any
	if json.Unmarshal(b, &obj) == nil {
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys) // one reading of the same object every time
		var parts []string
		for _, k := range keys {
			if s, ok := obj[k].(string); ok {
				parts = append(parts, s)
			}
		}
		*p = periodName(strings.Join(parts, " "))
	}
	return nil
}

// ParseKeyChanges reads the model's answer to the KeyChanges prompt for the
// given snapshots (chronological) and returns one KeyChange per consecutive
// pair, in order. It tolerates code fences and text around the JSON object,
// transitions given out of order, and periods named in other words than the
// dates asked for:
//
//   - the label, in any case and spacing, with or without its parenthesis
//     ("today" for "today (November 26, 2026)"), or a name containing it;
//   - the date in another format ("Jan 2023", "January 1, 2023",
//     "2023/01/01", "2023-01", or "2023" when it names one snapshot, or one
//     that fits the transition's other end);
//   - a letter, number or ordinal ("A"→"B", "1"→"2", "0"→"1", "first",
//     "Snapshot 2", "last");
//   - transitions that name nothing (empty names) are taken in order, and
//     when the answer has exactly one transition per pair, so are those
//     whose names cannot be read (or fit several pairs): each takes the
//     first pair, in order, that no transition took by its names.
//
// A transition whose names are read but name no consecutive pair (a date of
// no snapshot, a pair that skips one, a backwards pair) is left out. A pair
// the model left out gets an empty list. It fails with ErrMalformed when no
// usable JSON object is found or no transition could be placed. It never
// panics.
func ParseKeyChanges(answer string, snaps []job.Member) ([]KeyChange, error) {
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
	out := make([]KeyChange, 0, max(len(snaps)-1, 0))
	for i := 0; i+1 < len(snaps); i++ {
		out = append(out, KeyChange{
			From: DateOf(snaps[i]), To: DateOf(snaps[i+1]),
			FromLabel: snaps[i].Label, ToLabel: snaps[i+1].Label,
			Changes: []string{},
		})
	}
	names := make([]string, 0, 2*len(doc.Transitions))
	for _, t := range doc.Transitions {
		names = append(names, string(t.From), string(t.To))
	}
	r := newResolver(snaps, names)
	positional := len(doc.Transitions) == len(out)
	slots := make([]int, len(doc.Transitions))
	named := make([]bool, len(out)) // slots placed by their names
	for k, t := range doc.Transitions {
		s, byName := r.slot(string(t.From), string(t.To), len(out))
		switch {
		case byName:
			slots[k] = s
			named[s] = true
		case s == slotAmbiguous && positional:
			// Names that fit several pairs ("2023" of two snapshots): the
			// order decides among them.
			slots[k] = slotByPosition
		case s == slotUnread && (positional || (strings.TrimSpace(string(t.From)) == "" && strings.TrimSpace(string(t.To)) == "")):
			slots[k] = slotByPosition
		default:
			slots[k] = slotNone
		}
	}
	// Transitions placed by position take the pairs no named transition
	// took, in order: a model that names one pair and garbles the others
	// still lists them in order. Names partly read must fit the pair.
	free := make([]bool, len(out))
	for s := range out {
		free[s] = !named[s]
	}
	matched := 0
	for k, t := range doc.Transitions {
		s := slots[k]
		if s == slotByPosition {
			s = slotNone
			for c := range out {
				if free[c] && r.fits(string(t.From), string(t.To), c) {
					s, free[c] = c, false
					break
				}
			}
		}
		if s < 0 {
			continue
		}
		for _, c := range t.Changes {
			if c = strings.TrimSpace(c); c != "" {
				out[s].Changes = append(out[s].Changes, c)
			}
		}
		matched++
	}
	if matched == 0 && len(out) > 0 {
		return nil, fmt.Errorf("%w: no transition matches the snapshots' periods", ErrMalformed)
	}
	return out, nil
}

// Slots of a transition other than a pair's index.
const (
	slotNone       = -1 // left out
	slotByPosition = -2 // the first pair, in order, no other took and its names fit
	slotUnread     = -3 // its names name nothing that can be read
	slotAmbiguous  = -4 // its names fit several pairs
)

// resolver reads the names of periods against the snapshots.
type resolver struct {
	n int
	// exact maps a normalised date or label (with and without its
	// parenthesis, and the parenthesis alone) to the snapshots it names.
	exact map[string][]int
	// labels are the snapshots' labels as tokens, for names containing
	// them.
	labels [][]string
	dates  []ymd
	// zeroBased: the answer numbers the periods from 0.
	zeroBased bool
}

// ymd is a date as far as it is known: 0 for a part not given.
type ymd struct{ y, m, d int }

func newResolver(snaps []job.Member, names []string) *resolver {
	r := &resolver{n: len(snaps), exact: map[string][]int{}, labels: make([][]string, len(snaps)), dates: make([]ymd, len(snaps))}
	add := func(key string, i int) {
		if key != "" && !slices.Contains(r.exact[key], i) {
			r.exact[key] = append(r.exact[key], i)
		}
	}
	for i, s := range snaps {
		add(strings.Join(tokens(DateOf(s)), " "), i)
		add(strings.Join(tokens(s.Label), " "), i)
		outside, inside := splitParens(s.Label)
		add(strings.Join(tokens(outside), " "), i)
		add(strings.Join(tokens(inside), " "), i)
		r.labels[i] = tokens(outside)
		if cands := parseDate(tokens(DateOf(s))); len(cands) == 1 && cands[0].d > 0 {
			r.dates[i] = cands[0]
		}
	}
	for _, name := range names {
		if v, ok := number(tokens(name)); ok && v == 0 {
			r.zeroBased = true
		}
	}
	return r
}

// slot returns the pair (0..pairs-1) a transition from→to names, with true;
// or, with false, slotUnread when neither name can be read, slotAmbiguous
// when the names fit several pairs, slotNone when they fit none.
func (r *resolver) slot(from, to string, pairs int) (int, bool) {
	f, fKnown := r.resolve(from)
	t, tKnown := r.resolve(to)
	if !fKnown && !tKnown {
		return slotUnread, false
	}
	var fit []int
	for s := range pairs {
		if (!fKnown || slices.Contains(f, s)) && (!tKnown || slices.Contains(t, s+1)) {
			fit = append(fit, s)
		}
	}
	switch len(fit) {
	case 0:
		return slotNone, false
	case 1:
		return fit[0], true
	}
	return slotAmbiguous, false
}

// fits tells whether from→to may be pair s: names that cannot be read fit
// any pair.
func (r *resolver) fits(from, to string, s int) bool {
	f, fKnown := r.resolve(from)
	t, tKnown := r.resolve(to)
	return (!fKnown || slices.Contains(f, s)) && (!tKnown || slices.Contains(t, s+1))
}

// resolve returns the snapshots a name may mean, with true when the name
// could be read at all (then an empty list says it names none of them).
func (r *resolver) resolve(name string) ([]int, bool) {
	toks := tokens(name)
	if len(toks) == 0 {
		return nil, false
	}
	if ids, ok := r.exact[strings.Join(toks, " ")]; ok {
		return ids, true
	}
	if i, ok := r.index(toks); ok {
		if i < 0 || i >= r.n {
			return []int{}, true
		}
		return []int{i}, true
	}
	if ids := r.containing(toks); len(ids) > 0 {
		return ids, true
	}
	if cands := parseDate(toks); len(cands) > 0 {
		ids := []int{}
		for i, d := range r.dates {
			if d.y == 0 {
				continue // a snapshot date that does not parse matches none
			}
			for _, c := range cands {
				if (c.y == 0 || c.y == d.y) && (c.m == 0 || c.m == d.m) && (c.d == 0 || c.d == d.d) {
					ids = append(ids, i)
					break
				}
			}
		}
		return ids, true
	}
	return nil, false
}

// filler words around a period's number or letter ("Snapshot 2",
// "answer B", "the first period").
var filler = map[string]bool{
	"snapshot": true, "answer": true, "response": true, "period": true, "point": true, "time": true,
	"date": true, "the": true, "no": true, "number": true, "nr": true, "num": true, "as": true, "of": true,
	"at": true, "step": true, "stage": true, "version": true,
}

var ordinals = map[string]int{
	"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
	"eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12,
	"initial": 1, "earliest": 1, "oldest": 1,
}

// lastWords name the last period.
var lastWords = map[string]bool{"last": true, "final": true, "latest": true, "newest": true, "current": true, "present": true, "now": true, "today": true}

// index reads a name that is a period's position: a letter ("B"), a number
// ("2", "T2", "#2"; from 1, or from 0 when the answer uses 0), an ordinal
// ("second", "2nd", "last"), among filler words. It returns the snapshot's
// index, which may be out of range.
func (r *resolver) index(toks []string) (int, bool) {
	var rest []string
	for _, t := range toks {
		if !filler[t] {
			rest = append(rest, t)
		}
	}
	if v, ok := number(rest); ok {
		if r.zeroBased {
			return v, true
		}
		return v - 1, true
	}
	switch {
	case len(rest) == 2 && isDigits(rest[0]) && len(rest[0]) <= 3 && (rest[1] == "st" || rest[1] == "nd" || rest[1] == "rd" || rest[1] == "th"):
		v, _ := strconv.Atoi(rest[0])
		return v - 1, true // "2nd" counts from 1 whatever the numbers do
	case len(rest) != 1:
		return 0, false
	case lastWords[rest[0]]:
		return r.n - 1, true
	case ordinals[rest[0]] > 0:
		return ordinals[rest[0]] - 1, true
	case len(rest[0]) == 1 && rest[0][0] >= 'a' && rest[0][0] <= 'z':
		return int(rest[0][0] - 'a'), true
	}
	return 0, false
}

// number reads a period's number among filler tokens: "2", "T2", "P 2"
// (not a year: at most three digits).
func number(toks []string) (int, bool) {
	var rest []string
	for _, t := range toks {
		if !filler[t] {
			rest = append(rest, t)
		}
	}
	if len(rest) == 2 && len(rest[0]) == 1 && !isDigits(rest[0]) {
		rest = rest[1:] // a one-letter prefix: T2, P2, S2
	}
	if len(rest) != 1 || !isDigits(rest[0]) || len(rest[0]) > 3 {
		return 0, false
	}
	v, err := strconv.Atoi(rest[0])
	return v, err == nil
}

// containing returns the snapshots whose label (without its parenthesis)
// the name contains, word for word: the longest such labels.
func (r *resolver) containing(toks []string) []int {
	var ids []int
	best := 0
	for i, l := range r.labels {
		if len(l) == 0 || len(l) < best || !containsRun(toks, l) {
			continue
		}
		if len(l) > best {
			ids, best = nil, len(l)
		}
		ids = append(ids, i)
	}
	return ids
}

func containsRun(toks, run []string) bool {
	for i := 0; i+len(run) <= len(toks); i++ {
		if slices.Equal(toks[i:i+len(run)], run) {
			return true
		}
	}
	return false
}

var months = map[string]int{
	"jan": 1, "january": 1, "feb": 2, "february": 2, "mar": 3, "march": 3, "apr": 4, "april": 4,
	"may": 5, "jun": 6, "june": 6, "jul": 7, "july": 7, "aug": 8, "august": 8,
	"sep": 9, "sept": 9, "september": 9, "oct": 10, "october": 10, "nov": 11, "november": 11,
	"dec": 12, "december": 12,
}

// parseDate reads the date a name gives, in any common format, as far as
// it goes: a year (four digits), a month (by name, or by number next to the
// year), a day. Numbers before the year that could be month/day either way
// ("03/04/2023") give both readings. It returns nothing when the name holds
// no year and no month name, or two different ones (a range).
func parseDate(toks []string) []ymd {
	year, yearAt := 0, -1
	month, monthAt := 0, -1
	for i, t := range toks {
		if isDigits(t) && len(t) == 4 {
			v, _ := strconv.Atoi(t)
			if v < 1000 || v > 2999 || (year != 0 && v != year) {
				return nil
			}
			year, yearAt = v, i
		}
		if m, ok := months[t]; ok {
			if month != 0 && m != month {
				return nil
			}
			month, monthAt = m, i
		}
	}
	if year == 0 && month == 0 {
		return nil
	}
	small := func(i, hi int) int { // a number 1..hi at i, else 0
		if i < 0 || i >= len(toks) || !isDigits(toks[i]) || len(toks[i]) > 2 {
			return 0
		}
		v, _ := strconv.Atoi(toks[i])
		if v < 1 || v > hi {
			return 0
		}
		return v
	}
	for _, t := range toks {
		if t == "q" || t == "quarter" || t == "h" || t == "half" {
			return []ymd{{y: year}} // "Q1 2023": a year's part, no month
		}
	}
	if month != 0 {
		// The day is the number next to the month ("May 14", "14th of
		// May", "14 May").
		day := 0
		for _, i := range []int{monthAt + 1, monthAt - 1, monthAt - 2, monthAt - 3} {
			if d := small(i, 31); d > 0 && i != yearAt {
				day = d
				break
			}
		}
		return []ymd{{y: year, m: month, d: day}}
	}
	// Numbers only: after the year (ISO: 2023-05-14, 2023-05), or before
	// it (05/2023, 14/05/2023, 05/14/2023).
	if m := small(yearAt+1, 12); m > 0 {
		return []ymd{{y: year, m: m, d: small(yearAt+2, 31)}}
	}
	a, b := small(yearAt-2, 31), small(yearAt-1, 31)
	switch {
	case a > 0 && b > 0:
		var out []ymd
		if a <= 12 {
			out = append(out, ymd{year, a, b})
		}
		if b <= 12 && a != b {
			out = append(out, ymd{year, b, a})
		}
		if len(out) > 0 {
			return out
		}
	case b > 0 && b <= 12:
		return []ymd{{y: year, m: b}}
	}
	return []ymd{{y: year}}
}

// tokens splits s into lower-case words and numbers: "Jan-2023" is "jan"
// "2023", "26th" is "26" "th".
func tokens(s string) []string {
	var (
		out  []string
		cur  []rune
		kind int // 0 none, 1 letters, 2 digits
	)
	flush := func() {
		if len(cur) > 0 {
			out = append(out, string(cur))
			cur = cur[:0]
		}
	}
	for _, c := range strings.ToLower(s) {
		k := 0
		switch {
		case unicode.IsLetter(c):
			k = 1
		case unicode.IsDigit(c):
			k = 2
		}
		if k != kind {
			flush()
			kind = k
		}
		if k != 0 {
			cur = append(cur, c)
		}
	}
	flush()
	return out
}

// splitParens returns s without its parenthesised parts, and those parts.
func splitParens(s string) (outside, inside string) {
	var out, in strings.Builder
	depth := 0
	for _, c := range s {
		switch {
		case c == '(':
			depth++
			in.WriteByte(' ')
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
			in.WriteRune(c)
		default:
			out.WriteRune(c)
		}
	}
	return out.String(), in.String()
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
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
