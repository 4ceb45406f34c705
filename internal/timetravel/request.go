package timetravel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
)

// Limits on a submission.
const (
	MaxTimePoints = 12
	MaxLabelRunes = 80
	DateLayout    = "2006-01-02"
)

// earliestDate bounds how far back a time point may go.
var earliestDate = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)

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
// Its errors are *job.FieldError naming "time_points".
func (t *TimePointInput) UnmarshalJSON(b []byte) error {
	bad := func(msg string) error { return &job.FieldError{Field: "time_points", Message: msg} }
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
func (s Submission) Validate(now time.Time) (job.Spec, *job.FieldError) {
	today := now.UTC().Truncate(24 * time.Hour)
	q, ferr := job.ValidQuestion(s.Question)
	if ferr != nil {
		return job.Spec{}, ferr
	}
	var p Params
	inputs := s.TimePoints
	if inputs == nil {
		inputs = DefaultTimePoints()
	}
	if len(inputs) == 0 {
		return job.Spec{}, &job.FieldError{Field: "time_points", Message: "time_points must name at least one time point (omit it for the defaults)"}
	}
	if len(inputs) > MaxTimePoints {
		return job.Spec{}, &job.FieldError{Field: "time_points", Message: fmt.Sprintf("at most %d time points are allowed, got %d", MaxTimePoints, len(inputs))}
	}
	seen := make(map[string]int, len(inputs))
	for i, in := range inputs {
		field := fmt.Sprintf("time_points[%d]", i)
		if !in.set {
			return job.Spec{}, &job.FieldError{Field: field, Message: "time point must not be null"}
		}
		tp, ferr := resolveTimePoint(in, today, field)
		if ferr != nil {
			return job.Spec{}, ferr
		}
		if j, dup := seen[tp.Date]; dup {
			return job.Spec{}, &job.FieldError{Field: field, Message: fmt.Sprintf("date %s is already time_points[%d]", tp.Date, j)}
		}
		seen[tp.Date] = i
		p.TimePoints = append(p.TimePoints, tp)
	}
	sort.SliceStable(p.TimePoints, func(a, b int) bool { return p.TimePoints[a].Date < p.TimePoints[b].Date })

	if ferr := job.ValidModel("model", s.Model); ferr != nil {
		return job.Spec{}, ferr
	}
	switch Complexity(s.Complexity) {
	case "":
		p.Complexity = ComplexityStandard
	case ComplexityBrief, ComplexityStandard, ComplexityDetailed:
		p.Complexity = Complexity(s.Complexity)
	default:
		return job.Spec{}, &job.FieldError{Field: "complexity", Message: fmt.Sprintf("complexity must be brief, standard or detailed, not %q", job.Truncate(s.Complexity, 40))}
	}
	p.ForceTimeTravel = s.ForceTimeTravel
	common := job.Common{Question: &q, Cache: s.Cache, CallbackURL: s.CallbackURL}
	spec, ferr := common.Validate()
	if ferr != nil {
		return job.Spec{}, ferr
	}
	if p.ForceTimeTravel {
		spec.Cache = job.CacheBypass
	}
	spec.Kind, spec.Model = Name, s.Model
	spec.Params = jobkind.EncodeParams(p)
	return spec, nil
}

func resolveTimePoint(in TimePointInput, today time.Time, field string) (TimePoint, *job.FieldError) {
	raw := strings.TrimSpace(in.Date)
	label := strings.TrimSpace(in.Label)
	if utf8.RuneCountInString(label) > MaxLabelRunes {
		return TimePoint{}, &job.FieldError{Field: field + ".label", Message: fmt.Sprintf("label is longer than %d characters", MaxLabelRunes)}
	}
	for _, r := range label {
		if unicode.IsControl(r) {
			return TimePoint{}, &job.FieldError{Field: field + ".label", Message: "label must not contain control characters"}
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
			return TimePoint{}, &job.FieldError{Field: field, Message: fmt.Sprintf("%q is not a date: use YYYY-MM-DD or \"today\"", job.Truncate(raw, 40))}
		}
		if d.After(today) {
			return TimePoint{}, &job.FieldError{Field: field, Message: fmt.Sprintf("date %s is in the future (today is %s)", raw, today.Format(DateLayout))}
		}
		if d.Before(earliestDate) {
			return TimePoint{}, &job.FieldError{Field: field, Message: fmt.Sprintf("date %s is before %s", raw, earliestDate.Format(DateLayout))}
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
