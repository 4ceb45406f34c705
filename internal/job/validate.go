package job

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits on a submission.
const (
	MaxQuestionRunes = 4000
	MaxTimePoints    = 12
	MaxLabelRunes    = 80
	DateLayout       = "2006-01-02"
)

// earliestDate bounds how far back a time point may go.
var earliestDate = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)

var modelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$`)

// FieldError says which request field is wrong and why. Field uses JSON
// paths such as "time_points[2].date".
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Submission is the JSON body of POST /api/time-travel, before validation.
type Submission struct {
	Question        *string          `json:"question"`
	TimePoints      []TimePointInput `json:"time_points"`
	Model           string           `json:"model"`
	Complexity      string           `json:"complexity"`
	ForceTimeTravel bool             `json:"force_time_travel"`
	// Cache is "use" (the default) or "bypass" (skip cache reads, as
	// force_time_travel does).
	Cache string `json:"cache"`
	// CallbackURL is checked by the api against its webhook policy (it
	// needs configuration and DNS); Validate only carries it over.
	CallbackURL string `json:"callback_url"`
}

// TimePointInput is a time point as written by a client: "YYYY-MM-DD",
// "today", or {"date": "...", "label": "..."}.
type TimePointInput struct {
	Date  string `json:"date"`
	Label string `json:"label"`
	// set records that the element was present (and not null).
	set bool
}

// UnmarshalJSON accepts a string or an object with only date and label.
// Its errors are *FieldError naming "time_points".
func (t *TimePointInput) UnmarshalJSON(b []byte) error {
	bad := func(msg string) error { return &FieldError{Field: "time_points", Message: msg} }
	b = bytes.TrimSpace(b)
	switch {
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return bad("time point is not a valid JSON string")
		}
		*t = TimePointInput{Date: s, set: true}
		return nil
	case len(b) > 0 && b[0] == '{':
		var o struct {
			Date  *string `json:"date"`
			Label string  `json:"label"`
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
				return bad("unknown field " + name + " in a time point (it has only date and label)")
			}
			return bad(`a time point object is {"date": "YYYY-MM-DD", "label": "..."} with string values`)
		}
		if o.Date == nil {
			return bad(`a time point object needs "date"`)
		}
		*t = TimePointInput{Date: *o.Date, Label: o.Label, set: true}
		return nil
	case string(b) == "null":
		return nil
	}
	return bad(`a time point is "YYYY-MM-DD", "today" or {"date": "...", "label": "..."}`)
}

// DefaultTimePoints are used when a submission names none: January 2023,
// March 2023, May 2024 and today.
func DefaultTimePoints() []TimePointInput {
	return []TimePointInput{
		{Date: "2023-01-01", Label: "January 2023", set: true},
		{Date: "2023-03-01", Label: "March 2023", set: true},
		{Date: "2024-05-01", Label: "May 2024", set: true},
		{Date: "today", set: true},
	}
}

// Validate checks the submission against today's date (the request date, in
// UTC) and returns the Spec to run, or the first problem found. It never
// panics on any input.
func (s Submission) Validate(now time.Time) (Spec, *FieldError) {
	today := now.UTC().Truncate(24 * time.Hour)
	var spec Spec

	if s.Question == nil {
		return spec, &FieldError{"question", "question is required"}
	}
	q := strings.TrimSpace(*s.Question)
	switch {
	case q == "":
		return spec, &FieldError{"question", "question must not be empty or only white space"}
	case !utf8.ValidString(q):
		return spec, &FieldError{"question", "question must be valid UTF-8"}
	case utf8.RuneCountInString(q) > MaxQuestionRunes:
		return spec, &FieldError{"question", fmt.Sprintf("question is longer than %d characters", MaxQuestionRunes)}
	}
	for _, r := range q {
		if unicode.IsControl(r) && r != '\n' && r != '\t' && r != '\r' {
			return spec, &FieldError{"question", "question must not contain control characters"}
		}
	}
	spec.Question = q

	inputs := s.TimePoints
	if inputs == nil {
		inputs = DefaultTimePoints()
	}
	if len(inputs) == 0 {
		return spec, &FieldError{"time_points", "time_points must name at least one time point (omit it for the defaults)"}
	}
	if len(inputs) > MaxTimePoints {
		return spec, &FieldError{"time_points", fmt.Sprintf("at most %d time points are allowed, got %d", MaxTimePoints, len(inputs))}
	}
	seen := make(map[string]int, len(inputs))
	for i, in := range inputs {
		field := fmt.Sprintf("time_points[%d]", i)
		if !in.set {
			return spec, &FieldError{field, "time point must not be null"}
		}
		tp, ferr := resolveTimePoint(in, today, field)
		if ferr != nil {
			return spec, ferr
		}
		if j, dup := seen[tp.Date]; dup {
			return spec, &FieldError{field, fmt.Sprintf("date %s is already time_points[%d]", tp.Date, j)}
		}
		seen[tp.Date] = i
		spec.TimePoints = append(spec.TimePoints, tp)
	}
	sort.SliceStable(spec.TimePoints, func(a, b int) bool { return spec.TimePoints[a].Date < spec.TimePoints[b].Date })

	if s.Model != "" && !modelPattern.MatchString(s.Model) {
		return spec, &FieldError{"model", "model must be 1-128 characters of letters, digits and . _ : / @ + -"}
	}
	spec.Model = s.Model

	switch Complexity(s.Complexity) {
	case "":
		spec.Complexity = ComplexityStandard
	case ComplexityBrief, ComplexityStandard, ComplexityDetailed:
		spec.Complexity = Complexity(s.Complexity)
	default:
		return spec, &FieldError{"complexity", fmt.Sprintf("complexity must be brief, standard or detailed, not %q", truncate(s.Complexity, 40))}
	}
	spec.ForceTimeTravel = s.ForceTimeTravel
	switch CacheMode(s.Cache) {
	case "", CacheUse:
		spec.Cache = CacheUse
	case CacheBypass:
		spec.Cache = CacheBypass
	default:
		return spec, &FieldError{"cache", fmt.Sprintf("cache must be use or bypass, not %q", truncate(s.Cache, 40))}
	}
	if spec.ForceTimeTravel {
		spec.Cache = CacheBypass
	}
	spec.CallbackURL = strings.TrimSpace(s.CallbackURL)
	return spec, nil
}

func resolveTimePoint(in TimePointInput, today time.Time, field string) (TimePoint, *FieldError) {
	raw := strings.TrimSpace(in.Date)
	label := strings.TrimSpace(in.Label)
	if utf8.RuneCountInString(label) > MaxLabelRunes {
		return TimePoint{}, &FieldError{field + ".label", fmt.Sprintf("label is longer than %d characters", MaxLabelRunes)}
	}
	for _, r := range label {
		if unicode.IsControl(r) {
			return TimePoint{}, &FieldError{field + ".label", "label must not contain control characters"}
		}
	}
	var d time.Time
	if strings.EqualFold(raw, "today") {
		d = today
		if label == "" {
			label = "Today"
		}
	} else {
		var err error
		d, err = time.Parse(DateLayout, raw)
		if err != nil {
			return TimePoint{}, &FieldError{field, fmt.Sprintf("%q is not a date: use YYYY-MM-DD or \"today\"", truncate(raw, 40))}
		}
		if d.After(today) {
			return TimePoint{}, &FieldError{field, fmt.Sprintf("date %s is in the future (today is %s)", raw, today.Format(DateLayout))}
		}
		if d.Before(earliestDate) {
			return TimePoint{}, &FieldError{field, fmt.Sprintf("date %s is before %s", raw, earliestDate.Format(DateLayout))}
		}
		if label == "" {
			label = DefaultLabel(d)
		}
	}
	return TimePoint{Date: d.Format(DateLayout), Label: label}, nil
}

// DefaultLabel names a date for people: "March 2023" for the first of a
// month, "March 14, 2023" otherwise.
func DefaultLabel(d time.Time) string {
	if d.Day() == 1 {
		return d.Format("January 2006")
	}
	return d.Format("January 2, 2006")
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}
