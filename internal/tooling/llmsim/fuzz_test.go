package llmsim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func FuzzExtractDates(f *testing.F) {
	for _, s := range []string{"", "2023-01-01", "x2023-02-29y 2024-02-29", "0000-00-00", "9999-12-31-01", "2023-01-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		seen := make(map[string]bool)
		for _, d := range extractDates(s) {
			if seen[d.iso] || !strings.Contains(s, d.iso) || d.t.Format("2006-01-02") != d.iso {
				t.Fatalf("bad date %q from %q", d.iso, s)
			}
			seen[d.iso] = true
		}
	})
}

// FuzzChatCompletions sends arbitrary bodies: the server must answer 200
// (with valid JSON for non-streaming requests) or an OpenAI-style 4xx error,
// and never panic.
func FuzzChatCompletions(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"user","content":"As of 2023-03-15, best AI models?"}]}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"2023-01-01 2024-01-01"}]}`,
		`{"model":"m","response_format":{"type":"json_object"},"messages":[{"role":"user","content":[{"type":"text","text":"2023-01-01 2024-01-01"}]}]}`,
		`{"model":"m","max_tokens":3,"messages":[{"role":"system"},{"role":"user","content":null}]}`,
		`{"model":`, `[]`, `null`,
	} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"x"}]}`), "3")
	sim := New(Config{})
	f.Fuzz(func(t *testing.T, body []byte, words string) {
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body))
		if words != "" {
			req.Header[WordsHeader] = []string{words}
		}
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusOK:
			if rec.Header().Get("Content-Type") == "application/json" && !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("invalid JSON response: %s", rec.Body)
			}
		case rec.Code >= 400 && rec.Code < 500:
			var e struct {
				Error *apiError `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == nil || e.Error.Message == "" {
				t.Fatalf("bad error body %q", rec.Body)
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}
