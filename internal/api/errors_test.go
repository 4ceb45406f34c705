package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// readAndCheck reads body as the submit handler does (at most
// MaxBodyBytes) and checks it is one JSON object; it returns the object.
func readAndCheck(body string) ([]byte, error) {
	r := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(body)), MaxBodyBytes)
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return checkObject(b)
}

// decodeBody decodes body as the submit handler of time travel does (read,
// checked to be one object, decoded by the kind) and returns the error.
func decodeBody(body string) error {
	obj, err := readAndCheck(body)
	if err != nil {
		return err
	}
	_, err = timetravel.Kind{}.Decode(obj, time.Now())
	return err
}

func TestDecodeError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       string
		err        error // used instead of decoding body when set
		wantStatus int
		wantCode   string
		wantField  string
		wantMsg    []string // substrings of the message
	}{
		{
			name:       "body too large",
			body:       `{"question":"` + strings.Repeat("a", MaxBodyBytes) + `"}`,
			wantStatus: http.StatusRequestEntityTooLarge,
			wantCode:   CodeBodyTooLarge,
			wantMsg:    []string{strconv.Itoa(MaxBodyBytes)},
		},
		{
			name:       "empty body",
			body:       "",
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
			wantMsg:    []string{"empty"},
		},
		{
			name:       "only white space",
			body:       " \n\t ",
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
			wantMsg:    []string{"empty"},
		},
		{
			name:       "syntax error",
			body:       `{"question" "x"}`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
			wantMsg:    []string{"not valid JSON", "at byte 13"},
		},
		{
			name:       "not JSON at all",
			body:       `question=x`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
			wantMsg:    []string{"not valid JSON"},
		},
		{
			name:       "unexpected EOF",
			body:       `{"question":"x"`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
			wantMsg:    []string{"middle"},
		},
		{
			name:       "unexpected EOF inside a string",
			body:       `{"question":"x`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
			wantMsg:    []string{"middle"},
		},
		{
			name:       "unknown field",
			body:       `{"question":"q","x":1}`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeUnknownField,
			wantField:  "x",
			wantMsg:    []string{`unknown field "x"`},
		},
		{
			name:       "unknown field with a misspelt name",
			body:       `{"questions":"q"}`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeUnknownField,
			wantField:  "questions",
			wantMsg:    []string{`"questions"`},
		},
		{
			name:       "question is a number",
			body:       `{"question":42}`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeInvalidField,
			wantField:  "question",
			wantMsg:    []string{"question must be a string, not a JSON number"},
		},
		{
			name:       "force_time_travel is a string",
			body:       `{"question":"q","force_time_travel":"yes"}`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeInvalidField,
			wantField:  "force_time_travel",
			wantMsg:    []string{"force_time_travel must be true or false, not a JSON string"},
		},
		{
			name:       "time_points is a string",
			body:       `{"question":"q","time_points":"2023-01-01"}`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeInvalidField,
			wantField:  "time_points",
			wantMsg:    []string{"time_points must be a list, not a JSON string"},
		},
		{
			name:       "model is an object",
			body:       `{"question":"q","model":{}}`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeInvalidField,
			wantField:  "model",
			wantMsg:    []string{"model must be a string, not a JSON object"},
		},
		{
			name:       "body is a list",
			body:       `[{"question":"q"}]`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
			wantMsg:    []string{"JSON object"},
		},
		{
			name:       "body is a string",
			body:       `"What are the best AI models?"`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
			wantMsg:    []string{"JSON object"},
		},
		{
			name:       "body is a number",
			body:       `42`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
			wantMsg:    []string{"JSON object"},
		},
		{
			name:       "data after the object, decoded",
			body:       `{"question":"q"} {"question":"r"}`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
			wantMsg:    []string{"data after the JSON object"},
		},
		{
			name:       "null is the empty object",
			body:       `null`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeInvalidField,
			wantField:  "question",
			wantMsg:    []string{"question is required"},
		},
		{
			name:       "time point object with an unknown field",
			body:       `{"question":"q","time_points":[{"date":"2023-01-01","when":"x"}]}`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeInvalidField,
			wantField:  "time_points",
			wantMsg:    []string{`"when"`},
		},
		{
			name:       "time point is a number",
			body:       `{"question":"q","time_points":[20230101]}`,
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeInvalidField,
			wantField:  "time_points",
			wantMsg:    []string{"YYYY-MM-DD"},
		},
		{
			name:       "FieldError",
			err:        &job.FieldError{Field: "time_points[3].label", Message: "label is too long"},
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeInvalidField,
			wantField:  "time_points[3].label",
			wantMsg:    []string{"label is too long"},
		},
		{
			name:       "wrapped FieldError",
			err:        fmt.Errorf("decode: %w", &job.FieldError{Field: "time_points", Message: "bad"}),
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeInvalidField,
			wantField:  "time_points",
			wantMsg:    []string{"bad"},
		},
		{
			name:       "type error with an indexed path",
			err:        &json.UnmarshalTypeError{Value: "number", Type: reflect.TypeFor[string](), Field: "time_points.2.date"},
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeInvalidField,
			wantField:  "time_points[2].date",
			wantMsg:    []string{"time_points[2].date must be a string, not a JSON number"},
		},
		{
			name:       "type error without a field",
			err:        &json.UnmarshalTypeError{Value: "array", Type: reflect.TypeFor[timetravel.Submission]()},
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
		},
		{
			name:       "data after the object",
			err:        errors.New("request body has data after the JSON object"),
			wantStatus: http.StatusBadRequest,
			wantCode:   CodeMalformedJSON,
			wantMsg:    []string{"data after the JSON object"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.err
			if err == nil {
				err = decodeBody(tt.body)
				if err == nil {
					t.Fatalf("decoding %q succeeded", tt.body)
				}
			}
			status, d := decodeError(err)
			if status != tt.wantStatus || d.Code != tt.wantCode || d.Field != tt.wantField {
				t.Errorf("decodeError(%v) = %d %+v, want %d code %q field %q", err, status, d, tt.wantStatus, tt.wantCode, tt.wantField)
			}
			if d.Message == "" {
				t.Errorf("empty message for %v", err)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(d.Message, m) {
					t.Errorf("message %q lacks %q", d.Message, m)
				}
			}
		})
	}
}

func TestDecodeBodyAtTheLimit(t *testing.T) {
	t.Parallel()
	// A body of exactly MaxBodyBytes is read whole; one byte more is refused.
	prefix, suffix := `{"question":"`, `"}`
	fill := MaxBodyBytes - len(prefix) - len(suffix)
	if _, err := readAndCheck(prefix + strings.Repeat("a", fill) + suffix); err != nil {
		t.Fatalf("body of %d bytes: %v", MaxBodyBytes, err)
	}
	_, err := readAndCheck(prefix + strings.Repeat("a", fill+1) + suffix)
	if status, d := decodeError(err); status != http.StatusRequestEntityTooLarge || d.Code != CodeBodyTooLarge {
		t.Fatalf("body of %d bytes: %v → %d %+v", MaxBodyBytes+1, err, status, d)
	}
}

func TestJSONPath(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"time_points.2.date", "time_points[2].date"},
		{"time_points.2", "time_points[2]"},
		{"time_points.12.label", "time_points[12].label"},
		{"question", "question"},
		{"a.b", "a.b"},
		{"a.0.b.10", "a[0].b[10]"},
		{"a.1.2", "a[1][2]"},
		{"v2.x", "v2.x"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := jsonPath(tt.in); got != tt.want {
			t.Errorf("jsonPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
