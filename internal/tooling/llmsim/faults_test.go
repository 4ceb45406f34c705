package llmsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"go.uber.org/goleak"
)

// TestMain fails the run when a goroutine outlives the tests, e.g. a handler
// that a fault left waiting.
func TestMain(m *testing.M) {
	code := m.Run()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// clientWith returns a go-openai client that adds headers to every request.
func (s *testServer) clientWith(headers map[string]string) *openai.Client {
	cfg := openai.DefaultConfig("test-key")
	cfg.BaseURL = s.url + "/v1"
	cfg.HTTPClient = &http.Client{Transport: headerTransport(headers)}
	return openai.NewClientWithConfig(cfg)
}

func (s *testServer) control() Control { return Control{BaseURL: s.url} }

// rawChat posts a chat completion with the given headers and returns the
// response, its body read.
func rawChat(t *testing.T, url, body string, headers map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

var (
	snapshotReq = chatRequestFor("m", "As of 2023-03-15:", "What are the best AI models?")
	jsonReq     = func() openai.ChatCompletionRequest {
		r := chatRequestFor("m", "Compare 2023-01-01 and 2023-03-15.", "List key changes about AI models as JSON.")
		r.ResponseFormat = &openai.ChatCompletionResponseFormat{Type: openai.ChatCompletionResponseFormatTypeJSONObject}
		return r
	}()
)

// TestFaultKinds forces each fault with FaultHeader and observes it through
// the go-openai client, streaming and not.
func TestFaultKinds(t *testing.T) {
	const slow = 150 * time.Millisecond
	type outcome struct {
		res     streamResult // streaming only
		content string       // non-streaming only
		took    time.Duration
		err     error
	}
	apiStatus := func(want int) func(*testing.T, outcome) {
		return func(t *testing.T, o outcome) {
			var apiErr *openai.APIError
			if !errors.As(o.err, &apiErr) || apiErr.HTTPStatusCode != want || apiErr.Message == "" || apiErr.Type == "" {
				t.Errorf("error %#v, want an *openai.APIError with status %d", o.err, want)
			}
		}
	}
	tests := []struct {
		name    string
		fault   string
		req     openai.ChatCompletionRequest
		stream  bool
		timeout time.Duration // client side
		check   func(*testing.T, outcome)
		counted []FaultKind
	}{
		{name: "429", fault: "429", req: snapshotReq, check: apiStatus(429), counted: []FaultKind{FaultRateLimit}},
		{name: "429 stream", fault: "429", req: snapshotReq, stream: true, check: apiStatus(429), counted: []FaultKind{FaultRateLimit}},
		{name: "500", fault: "500", req: snapshotReq, check: apiStatus(500), counted: []FaultKind{FaultServerError}},
		{name: "500 stream", fault: "500", req: snapshotReq, stream: true, check: apiStatus(500), counted: []FaultKind{FaultServerError}},
		{name: "503", fault: "503", req: snapshotReq, check: apiStatus(503), counted: []FaultKind{FaultUnavailable}},
		{name: "503 stream", fault: "503", req: jsonReq, stream: true, check: apiStatus(503), counted: []FaultKind{FaultUnavailable}},
		{name: "401", fault: "401", req: snapshotReq, check: apiStatus(401), counted: []FaultKind{FaultUnauthorized}},
		{name: "401 stream", fault: "401", req: snapshotReq, stream: true, check: apiStatus(401), counted: []FaultKind{FaultUnauthorized}},
		{name: "hang", fault: "hang", req: snapshotReq, timeout: 100 * time.Millisecond, counted: []FaultKind{FaultHang},
			check: func(t *testing.T, o outcome) {
				if !errors.Is(o.err, context.DeadlineExceeded) {
					t.Errorf("error %v, want the client's deadline", o.err)
				}
			}},
		{name: "hang stream", fault: "hang", req: snapshotReq, stream: true, timeout: 100 * time.Millisecond, counted: []FaultKind{FaultHang},
			check: func(t *testing.T, o outcome) {
				// No headers come: the stream is never opened.
				if !errors.Is(o.err, context.DeadlineExceeded) || o.res.contentChunks != 0 {
					t.Errorf("error %v after %d chunks, want the client's deadline before any", o.err, o.res.contentChunks)
				}
			}},
		{name: "slow first token", fault: "slow_first_token", req: snapshotReq, counted: []FaultKind{FaultSlowFirstToken},
			check: func(t *testing.T, o outcome) {
				if o.err != nil || !strings.HasPrefix(o.content, simLabel) || o.took < slow {
					t.Errorf("answer %.20q after %v (error %v), want a normal answer after %v", o.content, o.took, o.err, slow)
				}
			}},
		{name: "slow first token stream", fault: "slow_first_token", req: snapshotReq, stream: true, counted: []FaultKind{FaultSlowFirstToken},
			check: func(t *testing.T, o outcome) {
				if o.err != nil || o.res.finishReason != openai.FinishReasonStop || o.took < slow {
					t.Errorf("finish %q after %v (error %v), want a normal stream after %v", o.res.finishReason, o.took, o.err, slow)
				}
			}},
		{name: "break", fault: "break", req: snapshotReq, counted: []FaultKind{FaultBreak},
			check: func(t *testing.T, o outcome) {
				var apiErr *openai.APIError
				if o.err == nil || errors.As(o.err, &apiErr) {
					t.Errorf("error %v, want a transport error", o.err)
				}
			}},
		{name: "break stream", fault: "break", req: snapshotReq, stream: true, counted: []FaultKind{FaultBreak},
			check: func(t *testing.T, o outcome) {
				if !errors.Is(o.err, io.ErrUnexpectedEOF) || o.res.contentChunks == 0 || o.res.finishReason != "" {
					t.Errorf("error %v after %d chunks, finish %q; want some chunks, no finish reason, then an unexpected EOF",
						o.err, o.res.contentChunks, o.res.finishReason)
				}
			}},
		{name: "bad json", fault: "bad_json", req: jsonReq, counted: []FaultKind{FaultBadJSON},
			check: func(t *testing.T, o outcome) {
				if o.err != nil || json.Valid([]byte(o.content)) || o.content == "" {
					t.Errorf("answer %q (error %v), want text that is not JSON", o.content, o.err)
				}
			}},
		{name: "bad json stream", fault: "bad_json", req: jsonReq, stream: true, counted: []FaultKind{FaultBadJSON},
			check: func(t *testing.T, o outcome) {
				if o.err != nil || json.Valid([]byte(o.res.content)) || o.res.finishReason != openai.FinishReasonStop {
					t.Errorf("answer %q, finish %q (error %v), want a finished answer that is not JSON", o.res.content, o.res.finishReason, o.err)
				}
			}},
		{name: "bad json outside json mode", fault: "bad_json", req: snapshotReq,
			check: func(t *testing.T, o outcome) {
				if o.err != nil || !strings.HasPrefix(o.content, simLabel) {
					t.Errorf("answer %.20q (error %v), want a normal answer", o.content, o.err)
				}
			}},
		{name: "slow and broken stream", fault: "slow_first_token; break", req: snapshotReq, stream: true,
			counted: []FaultKind{FaultSlowFirstToken, FaultBreak},
			check: func(t *testing.T, o outcome) {
				if !errors.Is(o.err, io.ErrUnexpectedEOF) || o.res.contentChunks == 0 || o.took < slow {
					t.Errorf("error %v after %d chunks and %v; want chunks after %v, then an unexpected EOF",
						o.err, o.res.contentChunks, o.took, slow)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, Config{SlowFirstToken: slow})
			client := srv.clientWith(map[string]string{FaultHeader: tt.fault})
			ctx := t.Context()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			var o outcome
			start := time.Now()
			if tt.stream {
				o.res, o.err = readStream(ctx, client, tt.req)
			} else {
				var resp openai.ChatCompletionResponse
				resp, o.err = client.CreateChatCompletion(ctx, tt.req)
				if o.err == nil {
					o.content = resp.Choices[0].Message.Content
				}
			}
			o.took = time.Since(start)
			tt.check(t, o)

			// Every handler has returned, hung ones included, and the
			// faults are counted.
			if err := srv.sim.WaitIdle(t.Context()); err != nil {
				t.Fatal(err)
			}
			var want FaultCounts
			for _, k := range tt.counted {
				*want.counter(k)++
			}
			st := srv.sim.Stats()
			if m := st.Models["m"]; m.Faults != want || st.Total.Faults != want || m.Requests != 1 || m.InFlight != 0 {
				t.Errorf("stats %+v, want 1 request, none in flight, faults %+v", st, want)
			}
		})
	}
}

func TestRateLimitHeaders(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	tests := []struct {
		retryAfter    time.Duration
		seconds, msec string
	}{
		{retryAfter: 0, seconds: "1", msec: "1000"}, // the default
		{retryAfter: 2500 * time.Millisecond, seconds: "3", msec: "2500"},
		{retryAfter: 10 * time.Millisecond, seconds: "1", msec: "10"},
	}
	for _, tt := range tests {
		srv := startServer(t, Config{RetryAfter: tt.retryAfter})
		resp, raw := rawChat(t, srv.url, body, map[string]string{FaultHeader: "429"})
		var e struct {
			Error *apiError `json:"error"`
		}
		if resp.StatusCode != 429 || json.Unmarshal([]byte(raw), &e) != nil || e.Error == nil || e.Error.Code != "rate_limit_exceeded" {
			t.Errorf("status %d, body %s; want 429 with an OpenAI rate limit error", resp.StatusCode, raw)
		}
		if got := resp.Header.Get("Retry-After"); got != tt.seconds {
			t.Errorf("RetryAfter %v: Retry-After %q, want %q", tt.retryAfter, got, tt.seconds)
		}
		if got := resp.Header.Get("Retry-After-Ms"); got != tt.msec {
			t.Errorf("RetryAfter %v: Retry-After-Ms %q, want %q", tt.retryAfter, got, tt.msec)
		}
	}
}

// The 401 fault quotes the request's credentials in OpenAI's error shape:
// the Authorization header, or Azure's api-key header.
func TestUnauthorizedEchoesTheKey(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	srv := startServer(t, Config{})
	tests := []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"bearer", map[string]string{"Authorization": "Bearer sk-echo-1"}, `Bearer sk-echo-1`},
		{"azure", map[string]string{"api-key": "azure-echo-2"}, `azure-echo-2`},
		{"none", nil, `""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{FaultHeader: "401"}
			for k, v := range tt.headers {
				h[k] = v
			}
			resp, raw := rawChat(t, srv.url, body, h)
			var e struct {
				Error *apiError `json:"error"`
			}
			if resp.StatusCode != http.StatusUnauthorized || json.Unmarshal([]byte(raw), &e) != nil || e.Error == nil ||
				e.Error.Code != "invalid_api_key" || e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, tt.want) {
				t.Errorf("status %d, body %s; want 401 invalid_api_key quoting %s", resp.StatusCode, raw, tt.want)
			}
		})
	}
}

func TestFaultHeaderErrors(t *testing.T) {
	srv := startServer(t, Config{SlowFirstToken: time.Millisecond})
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	for _, h := range []string{"teapot", "500;503", "hang,break", "429; slow_first_token", "break;;nope", "401;break"} {
		resp, raw := rawChat(t, srv.url, body, map[string]string{FaultHeader: h})
		if resp.StatusCode != 400 || !strings.Contains(raw, `"invalid_header"`) {
			t.Errorf("%s: %q: status %d, body %s; want 400 invalid_header", FaultHeader, h, resp.StatusCode, raw)
		}
	}
	// Empty names are ignored; a valid combination passes.
	for _, h := range []string{"", " ; ", "slow_first_token;bad_json, slow_first_token"} {
		if resp, raw := rawChat(t, srv.url, body, map[string]string{FaultHeader: h}); resp.StatusCode == 400 {
			t.Errorf("%s: %q refused: %s", FaultHeader, h, raw)
		}
	}
	if st := srv.sim.Stats(); st.Total.Requests != 3 {
		t.Errorf("%d requests counted, want only the 3 accepted", st.Total.Requests)
	}
}

// faultedRequests sends n non-streaming requests of model one after the other
// and returns the numbers (from 1) of those that failed, by status.
func faultedRequests(t *testing.T, srv *testServer, model string, n int) map[int][]int64 {
	t.Helper()
	client := srv.client(1)
	req := chatRequestFor(model, "As of 2023-03-15:", "What are the best AI models?")
	out := map[int][]int64{}
	for i := int64(1); i <= int64(n); i++ {
		_, err := client.CreateChatCompletion(t.Context(), req)
		var apiErr *openai.APIError
		switch {
		case err == nil:
		case errors.As(err, &apiErr):
			out[apiErr.HTTPStatusCode] = append(out[apiErr.HTTPStatusCode], i)
		default:
			t.Fatalf("request %d: %v", i, err)
		}
	}
	return out
}

func TestFaultDeterminism(t *testing.T) {
	const n = 200
	rules := []FaultRule{{Model: "m", Faults: []Fault{{FaultServerError, 0.10}, {FaultRateLimit, 0.05}}}}
	run := func(seed uint64) map[int][]int64 {
		srv := startServer(t, Config{Faults: rules, FaultSeed: seed})
		return faultedRequests(t, srv, "m", n)
	}
	first, again, other := run(7), run(7), run(8)
	if len(first[500]) == 0 || len(first[429]) == 0 {
		t.Fatalf("no faults in %d requests: %v", n, first)
	}
	if !slices.Equal(first[500], again[500]) || !slices.Equal(first[429], again[429]) {
		t.Errorf("same seed, different faults:\n%v\n%v", first, again)
	}
	if slices.Equal(first[500], other[500]) && slices.Equal(first[429], other[429]) {
		t.Errorf("seeds 7 and 8 give the same faults: %v", first)
	}
	// The server follows PickFault.
	want := map[int][]int64{}
	for i := int64(1); i <= n; i++ {
		if k, ok := PickFault(7, "m", i, rules[0].Faults); ok {
			status := map[FaultKind]int{FaultServerError: 500, FaultRateLimit: 429}[k]
			want[status] = append(want[status], i)
		}
	}
	if !slices.Equal(first[500], want[500]) || !slices.Equal(first[429], want[429]) {
		t.Errorf("server faults %v, PickFault says %v", first, want)
	}

	// A stats reset starts the numbering again; the zero seed is the default.
	srv := startServer(t, Config{Faults: rules})
	before := faultedRequests(t, srv, "m", 50)
	srv.sim.ResetStats()
	after := faultedRequests(t, srv, "m", 50)
	if !slices.Equal(before[500], after[500]) || !slices.Equal(before[429], after[429]) {
		t.Errorf("after a reset: %v, before: %v", after, before)
	}
	for _, i := range before[500] {
		if k, _ := PickFault(DefaultFaultSeed, "m", i, rules[0].Faults); k != FaultServerError {
			t.Errorf("request %d: 500 with the zero seed, PickFault with the default seed says %q", i, k)
		}
	}
}

func TestPickFault(t *testing.T) {
	faults := []Fault{{FaultServerError, 0.10}, {FaultRateLimit, 0.05}}
	// A lower rate hits a subset of the requests a higher one hits.
	for i := int64(1); i <= 2000; i++ {
		if _, low := PickFault(1, "m", i, []Fault{{FaultBreak, 0.05}}); low {
			if _, high := PickFault(1, "m", i, []Fault{{FaultBreak, 0.2}}); !high {
				t.Fatalf("request %d hit at rate 0.05 but not at 0.2", i)
			}
		}
	}
	// Rates 0 and 1, no faults.
	for i := int64(1); i <= 100; i++ {
		if k, ok := PickFault(3, "m", i, []Fault{{FaultHang, 0}, {FaultBreak, 1}}); !ok || k != FaultBreak {
			t.Fatalf("request %d: %q, %v; want break", i, k, ok)
		}
		if _, ok := PickFault(3, "m", i, nil); ok {
			t.Fatalf("request %d: a fault without faults", i)
		}
	}
	// Models differ.
	var a, b []int64
	for i := int64(1); i <= 200; i++ {
		if _, ok := PickFault(1, "a", i, faults); ok {
			a = append(a, i)
		}
		if _, ok := PickFault(1, "b", i, faults); ok {
			b = append(b, i)
		}
	}
	if slices.Equal(a, b) {
		t.Errorf("models a and b get the same faults: %v", a)
	}
}

// TestFaultRates checks the rates over 1000 requests to the server and over
// many seeds with PickFault.
func TestFaultRates(t *testing.T) {
	const n = 1000
	srv := startServer(t, Config{Faults: []FaultRule{{Model: "*", Faults: []Fault{{FaultServerError, 0.10}, {FaultRateLimit, 0.05}}}}})
	got := faultedRequests(t, srv, "any-model", n)
	// Binomial standard deviations are 9.5 and 6.9; allow four.
	if c := len(got[500]); math.Abs(float64(c)-100) > 38 {
		t.Errorf("%d of %d requests got 500, want about 100", c, n)
	}
	if c := len(got[429]); math.Abs(float64(c)-50) > 28 {
		t.Errorf("%d of %d requests got 429, want about 50", c, n)
	}
	st := srv.sim.Stats()
	if f := st.Models["any-model"].Faults; f.ServerError != int64(len(got[500])) || f.RateLimit != int64(len(got[429])) || f.Total() != st.Total.Faults.Total() {
		t.Errorf("stats %+v, client saw %d 500s and %d 429s", st, len(got[500]), len(got[429]))
	}

	for _, rate := range []float64{0.01, 0.1, 0.5, 0.9} {
		for seed := uint64(1); seed <= 5; seed++ {
			hits := 0
			for i := int64(1); i <= 20000; i++ {
				if _, ok := PickFault(seed, "sim-snapshot", i, []Fault{{FaultBreak, rate}}); ok {
					hits++
				}
			}
			sd := math.Sqrt(20000 * rate * (1 - rate))
			if d := math.Abs(float64(hits) - 20000*rate); d > 5*sd {
				t.Errorf("seed %d rate %v: %d hits of 20000", seed, rate, hits)
			}
		}
	}
}

func TestRuntimeFaults(t *testing.T) {
	srv := startServer(t, Config{Faults: []FaultRule{{Model: "m", Faults: []Fault{{FaultUnavailable, 1}}}}})
	ctl := srv.control()
	ctx := t.Context()
	status := func(model string) int {
		t.Helper()
		_, err := srv.client(1).CreateChatCompletion(ctx, chatRequestFor(model, "hi"))
		var apiErr *openai.APIError
		switch {
		case err == nil:
			return 200
		case errors.As(err, &apiErr):
			return apiErr.HTTPStatusCode
		}
		t.Fatal(err)
		return 0
	}
	statuses := func(model string, n int) []int {
		t.Helper()
		var out []int
		for range n {
			out = append(out, status(model))
		}
		return out
	}

	// The next two requests of m get 500, then the Config rule again.
	st, err := ctl.SetFaults(ctx, FaultRule{Model: "m", Faults: []Fault{{Kind: FaultServerError, Rate: 1}}, Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Runtime) != 1 || st.Runtime[0].Remaining != 2 || len(st.Config) != 1 || st.Seed != DefaultFaultSeed {
		t.Errorf("state %+v", st)
	}
	if got := statuses("m", 3); !slices.Equal(got, []int{500, 500, 503}) {
		t.Errorf("m: %v, want 500 500 503", got)
	}
	if st, err := ctl.Faults(ctx); err != nil || len(st.Runtime) != 0 {
		t.Errorf("runtime rules after their count: %+v, %v", st, err)
	}

	// "*" at run time beats m's Config rule; m's own runtime rule beats "*";
	// an empty rule means no fault.
	if _, err := ctl.SetFaults(ctx, FaultRule{Model: "*", Faults: []Fault{{Kind: FaultRateLimit, Rate: 1}}}); err != nil {
		t.Fatal(err)
	}
	if got := statuses("m", 2); !slices.Equal(got, []int{429, 429}) {
		t.Errorf("m under *: %v, want 429 429", got)
	}
	if _, err := ctl.SetFaults(ctx, FaultRule{Model: "m", Count: 1}); err != nil {
		t.Fatal(err)
	}
	if got := append(statuses("m", 2), status("other")); !slices.Equal(got, []int{200, 429, 429}) {
		t.Errorf("m then other: %v, want 200 429 429", got)
	}

	// DELETE ?model= clears one rule, DELETE all of them; Config rules stay.
	if st, err := ctl.ClearFaults(ctx, "nobody"); err != nil || len(st.Runtime) != 1 {
		t.Errorf("clear another model: %+v, %v", st, err)
	}
	if st, err := ctl.ClearFaults(ctx); err != nil || len(st.Runtime) != 0 || len(st.Config) != 1 {
		t.Errorf("clear: %+v, %v", st, err)
	}
	if got := append(statuses("m", 1), status("other")); !slices.Equal(got, []int{503, 200}) {
		t.Errorf("after clear: %v, want 503 200", got)
	}

	stats, err := ctl.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := FaultCounts{RateLimit: 4, ServerError: 2, Unavailable: 2}
	if stats.Total.Faults != want {
		t.Errorf("faults %+v, want %+v", stats.Total.Faults, want)
	}
	raw, _ := json.Marshal(stats.Total.Faults)
	if string(raw) != `{"429":4,"500":2,"503":2}` {
		t.Errorf("faults as JSON: %s", raw)
	}
	if err := ctl.ResetStats(ctx); err != nil {
		t.Fatal(err)
	}
	if stats, err := ctl.Stats(ctx); err != nil || stats.Total != (Counters{}) {
		t.Errorf("after reset: %+v, %v", stats, err)
	}

	// Bad rules are refused with an OpenAI-style 400 and change nothing.
	for _, body := range []string{
		`{"model":"m","faults":[{"kind":"500","rate":2}]}`,
		`{"model":"","faults":[]}`,
		`{"model":"m","faults":[{"kind":"404","rate":1}]}`,
		`{"model":"m","faults":[{"kind":"500","rate":0.6},{"kind":"503","rate":0.6}]}`,
		`{"model":"m","faults":[],"count":-1}`,
		`{"model":"m","faults":[],"extra":1}`,
		`{"model":"m"} {}`,
		`not json`,
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.url+"/sim/faults", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), `"invalid_request_error"`) {
			t.Errorf("POST /sim/faults %s: %d %s", body, resp.StatusCode, b)
		}
	}
	if _, err := ctl.SetFaults(ctx, FaultRule{Model: "m", Faults: []Fault{{Kind: "nope", Rate: 1}}}); err == nil || !strings.Contains(err.Error(), "unknown fault") {
		t.Errorf("Control.SetFaults with a bad rule: %v", err)
	}
	if st := srv.sim.Faults(); len(st.Runtime) != 0 {
		t.Errorf("refused rules were installed: %+v", st.Runtime)
	}
	if err := srv.sim.SetRuntimeFaults(FaultRule{Model: "m", Faults: []Fault{{FaultBreak, -1}}}); err == nil {
		t.Error("SetRuntimeFaults accepted a negative rate")
	}
}

// TestRuntimeCountConcurrent checks that a counted rule hits exactly Count
// requests under concurrency.
func TestRuntimeCountConcurrent(t *testing.T) {
	srv := startServer(t, Config{})
	if err := srv.sim.SetRuntimeFaults(FaultRule{Model: "m", Faults: []Fault{{FaultServerError, 1}}, Count: 7}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 30 {
		wg.Go(func() { _, _ = srv.client(1).CreateChatCompletion(t.Context(), chatRequestFor("m", "hi")) })
	}
	wg.Wait()
	if st := srv.sim.Stats().Models["m"]; st.Requests != 30 || st.Faults != (FaultCounts{ServerError: 7}) {
		t.Errorf("stats %+v, want 30 requests and 7 faults", st)
	}
}

// TestHangReleasedByClose checks that Server.Close ends a hung request, and
// that later hangs end at once.
func TestHangReleasedByClose(t *testing.T) {
	srv := startServer(t, Config{})
	client := srv.clientWith(map[string]string{FaultHeader: "hang"})
	errs := make(chan error, 1)
	go func() {
		_, err := client.CreateChatCompletion(t.Context(), snapshotReq)
		errs <- err
	}()
	if err := srv.sim.WaitInFlight(t.Context(), "m", 1); err != nil {
		t.Fatal(err)
	}
	srv.sim.Close()
	srv.sim.Close() // idempotent
	if err := <-errs; err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("hung request ended with %v, want a connection error", err)
	}
	if _, err := client.CreateChatCompletion(t.Context(), snapshotReq); err == nil {
		t.Error("a hang after Close answered")
	}
	if err := srv.sim.WaitIdle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := srv.sim.Stats(); st.Total.Faults.Hang != 2 {
		t.Errorf("stats %+v, want 2 hangs", st)
	}
}

func TestParseFaults(t *testing.T) {
	tests := []struct {
		spec    string
		want    []FaultRule
		wantErr string
	}{
		{spec: "", want: nil},
		{spec: "   ", want: nil},
		{spec: "sim-snapshot=500:0.10+429:0.05,sim-extract=bad_json:1", want: []FaultRule{
			{Model: "sim-snapshot", Faults: []Fault{{FaultServerError, 0.10}, {FaultRateLimit, 0.05}}},
			{Model: "sim-extract", Faults: []Fault{{FaultBadJSON, 1}}},
		}},
		{spec: " * = 503 : 0.2 + hang:0.01 , m=break", want: []FaultRule{
			{Model: "*", Faults: []Fault{{FaultUnavailable, 0.2}, {FaultHang, 0.01}}},
			{Model: "m", Faults: []Fault{{FaultBreak, 1}}},
		}},
		{spec: "*=401", want: []FaultRule{{Model: "*", Faults: []Fault{{FaultUnauthorized, 1}}}}},
		{spec: "a=b=slow_first_token:0", want: []FaultRule{{Model: "a=b", Faults: []Fault{{FaultSlowFirstToken, 0}}}}},
		{spec: "m=500:0.5+503:0.5", want: []FaultRule{{Model: "m", Faults: []Fault{{FaultServerError, 0.5}, {FaultUnavailable, 0.5}}}}},
		{spec: "m", wantErr: "want model=fault:rate"},
		{spec: "m=500:0.1,", wantErr: "want model=fault:rate"},
		{spec: "=500:0.1", wantErr: "empty model name"},
		{spec: "m=", wantErr: "no fault"},
		{spec: "m=404:0.1", wantErr: `unknown fault "404"`},
		{spec: "m=500:0.1+", wantErr: `unknown fault ""`},
		{spec: "m=500:lots", wantErr: "rate of 500"},
		{spec: "m=500:1.5", wantErr: "not between 0 and 1"},
		{spec: "m=500:-0.1", wantErr: "not between 0 and 1"},
		{spec: "m=500:NaN", wantErr: "not between 0 and 1"},
		{spec: "m=500:0.6+429:0.5", wantErr: "more than 1"},
		{spec: "m=500:0.1+500:0.2", wantErr: "given twice"},
		{spec: "m=500:0.1,m=429:0.1", wantErr: `model "m" given twice`},
	}
	for _, tt := range tests {
		got, err := ParseFaults(tt.spec)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseFaults(%q) error %v, want one with %q", tt.spec, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.EqualFunc(got, tt.want, equalRules) {
			t.Errorf("ParseFaults(%q) = %+v, %v; want %+v", tt.spec, got, err, tt.want)
		}
	}
}

func equalRules(a, b FaultRule) bool {
	return a.Model == b.Model && a.Count == b.Count && slices.Equal(a.Faults, b.Faults)
}

func TestNewPanicsOnBadRules(t *testing.T) {
	for _, rules := range [][]FaultRule{
		{{Model: "m", Faults: []Fault{{FaultBreak, 2}}}},
		{{Model: "m"}, {Model: "m"}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("New accepted %+v", rules)
				}
			}()
			New(Config{Faults: rules})
		}()
	}
}

func TestFaultCounts(t *testing.T) {
	var c FaultCounts
	for i, k := range FaultKinds() {
		for range i + 1 {
			*c.counter(k)++
		}
	}
	for i, k := range FaultKinds() {
		if c.Of(k) != int64(i+1) {
			t.Errorf("Of(%s) = %d, want %d", k, c.Of(k), i+1)
		}
	}
	if c.Total() != 36 || c.Of("nope") != 0 {
		t.Errorf("Total %d, Of(nope) %d", c.Total(), c.Of("nope"))
	}
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[FaultKind]int64
	if err := json.Unmarshal(raw, &m); err != nil || len(m) != len(FaultKinds()) {
		t.Fatalf("JSON %s: %v", raw, err)
	}
	for k, n := range m {
		if c.Of(k) != n {
			t.Errorf("JSON %s: %s is %d, want %d", raw, k, n, c.Of(k))
		}
	}
}

// FuzzParseFaults checks that ParseFaults never panics, that what it accepts
// is valid, and that FormatFaults writes it back.
func FuzzParseFaults(f *testing.F) {
	for _, s := range []string{
		"", "sim-snapshot=500:0.10+429:0.05,sim-extract=bad_json:1", "*=hang", "a=b=break:0.5",
		"m=500:0.6+429:0.5", "m=500:1e-3+503:.5", " x = slow_first_token : 1 ", "m=500:0x1p-2", ",", "=", "m=:", "m=500:",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		rules, err := ParseFaults(spec)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		for i, r := range rules {
			if err := r.Validate(); err != nil {
				t.Fatalf("accepted an invalid rule %+v: %v", r, err)
			}
			if len(r.Faults) == 0 || r.Count != 0 || r.Model != strings.TrimSpace(r.Model) {
				t.Fatalf("rule %+v", r)
			}
			for _, o := range rules[:i] {
				if o.Model == r.Model {
					t.Fatalf("model %q twice", r.Model)
				}
			}
		}
		again, err := ParseFaults(FormatFaults(rules))
		if err != nil || !slices.EqualFunc(again, rules, equalRules) {
			t.Fatalf("round trip of %q via %q: %+v, %v", spec, FormatFaults(rules), again, err)
		}
	})
}
