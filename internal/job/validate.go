package job

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxQuestionRunes bounds the question of a request of any kind.
const MaxQuestionRunes = 4000

var modelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$`)

// FieldError says which request field is wrong and why. Field uses JSON
// paths such as "time_points[2].date".
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Common is the part of a request body every kind has.
type Common struct {
	Question *string `json:"question"`
	// Cache is "use" (the default) or "bypass" (skip cache reads).
	Cache string `json:"cache"`
	// CallbackURL is checked by the api against its webhook policy (it
	// needs configuration and DNS); Validate only carries it over.
	CallbackURL string `json:"callback_url"`
}

// Validate checks the common fields and returns the Spec they make, or
// the first problem found (question first, then cache).
func (c Common) Validate() (Spec, *FieldError) {
	var spec Spec
	q, ferr := ValidQuestion(c.Question)
	if ferr != nil {
		return spec, ferr
	}
	spec.Question = q
	switch CacheMode(c.Cache) {
	case "", CacheUse:
		spec.Cache = CacheUse
	case CacheBypass:
		spec.Cache = CacheBypass
	default:
		return spec, &FieldError{"cache", fmt.Sprintf("cache must be use or bypass, not %q", Truncate(c.Cache, 40))}
	}
	spec.CallbackURL = strings.TrimSpace(c.CallbackURL)
	return spec, nil
}

// ValidQuestion checks a request's question and returns it trimmed.
func ValidQuestion(question *string) (string, *FieldError) {
	if question == nil {
		return "", &FieldError{"question", "question is required"}
	}
	q := strings.TrimSpace(*question)
	switch {
	case q == "":
		return "", &FieldError{"question", "question must not be empty or only white space"}
	case !utf8.ValidString(q):
		return "", &FieldError{"question", "question must be valid UTF-8"}
	case utf8.RuneCountInString(q) > MaxQuestionRunes:
		return "", &FieldError{"question", fmt.Sprintf("question is longer than %d characters", MaxQuestionRunes)}
	}
	for _, r := range q {
		if unicode.IsControl(r) && r != '\n' && r != '\t' && r != '\r' {
			return "", &FieldError{"question", "question must not contain control characters"}
		}
	}
	return q, nil
}

// ValidModel checks a model name given in field (empty passes: the
// default model).
func ValidModel(field, model string) *FieldError {
	if model != "" && !modelPattern.MatchString(model) {
		return &FieldError{field, field + " must be 1-128 characters of letters, digits and . _ : / @ + -"}
	}
	return nil
}

// Truncate shortens s to n runes, marking the cut with "…", for echoing
// bad input in an error.
func Truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}
