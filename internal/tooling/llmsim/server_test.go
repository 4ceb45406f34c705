package llmsim

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// testServer is a simulator behind an httptest.Server.
type testServer struct {
	sim *Server
	url string
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	sim := New(cfg)
	ts := httptest.NewServer(sim)
	t.Cleanup(ts.Close)
	return &testServer{sim: sim, url: ts.URL}
}

// client returns a go-openai client for the simulator; words > 0 adds the
// WordsHeader to every request.
func (s *testServer) client(words int) *openai.Client {
	cfg := openai.DefaultConfig("test-key")
	cfg.BaseURL = s.url + "/v1"
	if words > 0 {
		cfg.HTTPClient = &http.Client{Transport: headerTransport{WordsHeader: strconv.Itoa(words)}}
	}
	return openai.NewClientWithConfig(cfg)
}

type headerTransport map[string]string

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func chatRequestFor(model string, msgs ...string) openai.ChatCompletionRequest {
	req := openai.ChatCompletionRequest{Model: model}
	for i, m := range msgs {
		role := openai.ChatMessageRoleSystem
		if i == len(msgs)-1 {
			role = openai.ChatMessageRoleUser
		}
		req.Messages = append(req.Messages, openai.ChatCompletionMessage{Role: role, Content: m})
	}
	return req
}

// streamResult is everything received from one stream.
type streamResult struct {
	content       string
	contentChunks int
	firstRole     string
	finishReason  openai.FinishReason
	usage         *openai.Usage
	usageChoices  int
}

func readStream(ctx context.Context, client *openai.Client, req openai.ChatCompletionRequest) (streamResult, error) {
	var res streamResult
	stream, err := client.CreateChatCompletionStream(ctx, req)
	if err != nil {
		return res, err
	}
	defer stream.Close()
	var b strings.Builder
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			res.content = b.String()
			return res, nil
		}
		if err != nil {
			return res, err
		}
		if chunk.Usage != nil {
			res.usage = chunk.Usage
			res.usageChoices = len(chunk.Choices)
			continue
		}
		for _, c := range chunk.Choices {
			if c.Delta.Content != "" {
				if res.contentChunks == 0 {
					res.firstRole = c.Delta.Role
				}
				res.contentChunks++
				b.WriteString(c.Delta.Content)
			}
			if c.FinishReason != "" {
				res.finishReason = c.FinishReason
			}
		}
	}
}

func TestChatRoundTrip(t *testing.T) {
	srv := startServer(t, Config{})
	client := srv.client(0)
	ctx := t.Context()
	tests := []struct {
		name         string
		msgs         []string
		jsonMode     bool
		includeUsage bool
	}{
		{name: "snapshot", msgs: []string{"Today is 2023-03-15.", "What are the best AI models?"}},
		{name: "snapshot with usage", msgs: []string{"Today is 2024-05-01.", "What is the best city to live in?"}, includeUsage: true},
		{name: "narrative", msgs: []string{"Dates: 2023-01-01, 2024-05-01.", "How did the answer change?"}, includeUsage: true},
		{name: "json", msgs: []string{"Compare 2023-01-01 and 2023-03-15.", "List key changes about AI models as JSON."}, jsonMode: true, includeUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := chatRequestFor("sim-test", tt.msgs...)
			if tt.jsonMode {
				req.ResponseFormat = &openai.ChatCompletionResponseFormat{Type: openai.ChatCompletionResponseFormatTypeJSONObject}
			}
			resp, err := client.CreateChatCompletion(ctx, req)
			if err != nil {
				t.Fatalf("CreateChatCompletion: %v", err)
			}
			if len(resp.Choices) != 1 {
				t.Fatalf("got %d choices, want 1", len(resp.Choices))
			}
			choice := resp.Choices[0]
			text := choice.Message.Content
			if choice.Message.Role != openai.ChatMessageRoleAssistant || choice.FinishReason != openai.FinishReasonStop {
				t.Errorf("role %q, finish %q; want assistant, stop", choice.Message.Role, choice.FinishReason)
			}
			if resp.Object != "chat.completion" || resp.Model != "sim-test" || resp.ID == "" {
				t.Errorf("object %q, model %q, id %q", resp.Object, resp.Model, resp.ID)
			}
			u := resp.Usage
			if u.PromptTokens <= 0 || u.CompletionTokens != len(tokenize(text)) || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
				t.Errorf("usage %+v for %d tokens", u, len(tokenize(text)))
			}
			if tt.jsonMode {
				if !json.Valid([]byte(text)) {
					t.Errorf("json mode answer is not JSON: %s", text)
				}
			} else if !strings.HasPrefix(text, simLabel) {
				t.Errorf("answer does not start with %q: %s", simLabel, text)
			}

			req.StreamOptions = &openai.StreamOptions{IncludeUsage: tt.includeUsage}
			res, err := readStream(ctx, client, req)
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			if res.content != text {
				t.Errorf("streamed text differs from the non-streamed one:\n%s\n%s", res.content, text)
			}
			if res.contentChunks != u.CompletionTokens {
				t.Errorf("got %d content chunks, want one per token (%d)", res.contentChunks, u.CompletionTokens)
			}
			if res.firstRole != openai.ChatMessageRoleAssistant || res.finishReason != openai.FinishReasonStop {
				t.Errorf("first role %q, finish %q; want assistant, stop", res.firstRole, res.finishReason)
			}
			switch {
			case !tt.includeUsage && res.usage != nil:
				t.Errorf("usage %+v sent without include_usage", res.usage)
			case tt.includeUsage && res.usage == nil:
				t.Error("no usage chunk with include_usage")
			case tt.includeUsage && (*res.usage != u || res.usageChoices != 0):
				t.Errorf("usage chunk %+v with %d choices, want %+v with none", *res.usage, res.usageChoices, u)
			}
		})
	}
}

func TestStreamWireFormat(t *testing.T) {
	srv := startServer(t, Config{})
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"On 2024-01-01?"}]}`
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(WordsHeader, "3")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	events := strings.Split(strings.TrimSuffix(string(raw), "\n\n"), "\n\n")
	// 3 tokens, the finish chunk, the usage chunk and [DONE].
	if len(events) != 6 || events[5] != "data: [DONE]" {
		t.Fatalf("got %d events:\n%s", len(events), raw)
	}
	for i, ev := range events[:5] {
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta        map[string]string `json:"delta"`
				FinishReason *string           `json:"finish_reason"`
			} `json:"choices"`
			Usage *usage `json:"usage"`
		}
		payload, ok := strings.CutPrefix(ev, "data: ")
		if !ok || json.Unmarshal([]byte(payload), &c) != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("event %d is not a chunk: %q", i, ev)
		}
		switch {
		case i < 3:
			if len(c.Choices) != 1 || c.Choices[0].FinishReason != nil || c.Choices[0].Delta["content"] == "" {
				t.Errorf("token chunk %d: %s", i, ev)
			}
			if _, hasRole := c.Choices[0].Delta["role"]; hasRole != (i == 0) {
				t.Errorf("token chunk %d: role only in the first chunk: %s", i, ev)
			}
		case i == 3:
			if len(c.Choices) != 1 || c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != "stop" {
				t.Errorf("finish chunk: %s", ev)
			}
		case i == 4:
			if len(c.Choices) != 0 || c.Usage == nil || c.Usage.CompletionTokens != 3 {
				t.Errorf("usage chunk: %s", ev)
			}
		}
	}
}

func TestWordsHeader(t *testing.T) {
	srv := startServer(t, Config{})
	for _, n := range []int{1, 7, 150, 2000} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			client := srv.client(n)
			for _, msgs := range [][]string{
				{"As of 2023-03-15:", "What are the best AI models?"},
				{"As of 2023-03-15:", "Which car should I buy?"},
				{"From 2023-03-15 to 2024-03-15:", "Tell the story."},
			} {
				req := chatRequestFor("m", msgs...)
				resp, err := client.CreateChatCompletion(t.Context(), req)
				if err != nil {
					t.Fatal(err)
				}
				text := resp.Choices[0].Message.Content
				if got := len(strings.Fields(text)); got != n || resp.Usage.CompletionTokens != n {
					t.Errorf("%q: got %d words, %d tokens, want %d", msgs, got, resp.Usage.CompletionTokens, n)
				}
				res, err := readStream(t.Context(), client, req)
				if err != nil {
					t.Fatal(err)
				}
				if res.contentChunks != n || res.content != text {
					t.Errorf("%q: streamed %d chunks, want %d with the same text", msgs, res.contentChunks, n)
				}
			}
		})
	}
}

// TestConfigWords checks that Config.Words fixes the length of prose
// answers whose request does not set WordsHeader, that the header still
// wins, that JSON mode keeps its own length, and that Stats counts every
// streamed content chunk (and only those) until a reset.
func TestConfigWords(t *testing.T) {
	const words = 400
	srv := startServer(t, Config{Words: words})
	prose := chatRequestFor("m", "As of 2023-03-15:", "Which car should I buy?")
	jsonReq := chatRequestFor("x", "From 2023-03-15 to 2024-03-15:", "What changed?")
	jsonReq.ResponseFormat = &openai.ChatCompletionResponseFormat{Type: openai.ChatCompletionResponseFormatTypeJSONObject}
	tests := []struct {
		name       string
		header     int // WordsHeader; 0 for none
		req        openai.ChatCompletionRequest
		wantChunks int // 0: anything but words
	}{
		{"config length", 0, prose, words},
		{"header wins", 7, prose, 7},
		{"json mode unaffected", 0, jsonReq, 0},
	}
	var streamed int64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := readStream(t.Context(), srv.client(tt.header), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantChunks > 0 && res.contentChunks != tt.wantChunks {
				t.Errorf("streamed %d chunks, want %d", res.contentChunks, tt.wantChunks)
			}
			if tt.wantChunks == 0 && (res.contentChunks == words || res.contentChunks == 0) {
				t.Errorf("streamed %d chunks, want the answer's own length", res.contentChunks)
			}
			streamed += int64(res.contentChunks)
			st := srv.sim.Stats()
			if st.Total.StreamedTokens != streamed {
				t.Errorf("Stats: %d streamed tokens, want %d", st.Total.StreamedTokens, streamed)
			}
		})
	}
	// A non-streamed answer is not counted.
	if _, err := srv.client(0).CreateChatCompletion(t.Context(), prose); err != nil {
		t.Fatal(err)
	}
	st := srv.sim.Stats()
	if st.Total.StreamedTokens != streamed || st.Models["m"].StreamedTokens != int64(words+7) {
		t.Errorf("after a non-streamed answer: total %d, model m %d; want %d, %d",
			st.Total.StreamedTokens, st.Models["m"].StreamedTokens, streamed, words+7)
	}
	srv.sim.ResetStats()
	if got := srv.sim.Stats().Total.StreamedTokens; got != 0 {
		t.Errorf("after reset: %d streamed tokens, want 0", got)
	}
}

func TestMaxTokens(t *testing.T) {
	srv := startServer(t, Config{})
	req := chatRequestFor("m", "As of 2023-03-15:", "What are the best AI models?")
	req.MaxTokens = 5
	resp, err := srv.client(0).CreateChatCompletion(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if c := resp.Choices[0]; c.FinishReason != openai.FinishReasonLength || resp.Usage.CompletionTokens != 5 {
		t.Errorf("finish %q with %d tokens, want length with 5", c.FinishReason, resp.Usage.CompletionTokens)
	}
}

func TestPeakInFlight(t *testing.T) {
	const n = 4
	srv := startServer(t, Config{Latency: map[string]time.Duration{"slow": time.Second}})
	client := srv.client(3)
	req := chatRequestFor("slow", "As of 2024-01-01:", "What are the best AI models?")

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			if _, err := readStream(t.Context(), client, req); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("stream: %v", err)
	}
	// The clients have read everything; wait for the handlers to return.
	if err := srv.sim.WaitIdle(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := Counters{Requests: n, InFlight: 0, PeakInFlight: n, StreamedTokens: n * 3}
	st := srv.sim.Stats()
	if st.Total != want || st.Models["slow"] != want || len(st.Models) != 1 {
		t.Errorf("stats %+v, want total and model %+v", st, want)
	}

	srv.sim.ResetStats()
	if st := srv.sim.Stats(); st.Total != (Counters{}) || len(st.Models) != 0 {
		t.Errorf("stats after reset %+v, want zero", st)
	}
}

func TestLatencyLowerBound(t *testing.T) {
	const latency = 300 * time.Millisecond
	srv := startServer(t, Config{
		TTFT:            100 * time.Millisecond,
		TokensPerSecond: 100,
		Latency:         map[string]time.Duration{"fixed": latency, "instant": 0},
	})
	client := srv.client(10)
	tests := []struct {
		name    string
		model   string
		stream  bool
		atLeast time.Duration
	}{
		// 10 tokens at 100 per second after a 100ms TTFT.
		{name: "ttft and rate", model: "paced", atLeast: 200 * time.Millisecond},
		{name: "ttft and rate stream", model: "paced", stream: true, atLeast: 200 * time.Millisecond},
		{name: "fixed latency", model: "fixed", atLeast: latency},
		{name: "fixed latency stream", model: "fixed", stream: true, atLeast: latency},
		{name: "zero latency", model: "instant"},
		{name: "zero latency stream", model: "instant", stream: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := chatRequestFor(tt.model, "As of 2023-03-15:", "What are the best AI models?")
			start := time.Now()
			var err error
			if tt.stream {
				_, err = readStream(t.Context(), client, req)
			} else {
				_, err = client.CreateChatCompletion(t.Context(), req)
			}
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took < tt.atLeast {
				t.Errorf("took %v, want at least %v", took, tt.atLeast)
			}
		})
	}
}

func TestPace(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		cfg       Config
		model     string
		n         int
		first     time.Duration
		second    time.Duration
		last, end time.Duration
	}{
		{name: "rate", cfg: Config{TTFT: 200 * ms, TokensPerSecond: 50}, model: "m", n: 11,
			first: 200 * ms, second: 220 * ms, last: 400 * ms, end: 420 * ms},
		{name: "no rate", cfg: Config{TTFT: 200 * ms}, model: "m", n: 11,
			first: 200 * ms, second: 200 * ms, last: 200 * ms, end: 200 * ms},
		{name: "latency", cfg: Config{TTFT: 200 * ms, Latency: map[string]time.Duration{"m": time.Second}}, model: "m", n: 5,
			first: 200 * ms, second: 400 * ms, last: time.Second, end: time.Second},
		{name: "latency below ttft", cfg: Config{TTFT: 200 * ms, Latency: map[string]time.Duration{"m": 50 * ms}}, model: "m", n: 3,
			first: 50 * ms, second: 50 * ms, last: 50 * ms, end: 50 * ms},
		{name: "latency one token", cfg: Config{TTFT: 200 * ms, Latency: map[string]time.Duration{"m": time.Second}}, model: "m", n: 1,
			first: 200 * ms, second: 200 * ms, last: 200 * ms, end: time.Second},
		{name: "other model", cfg: Config{TTFT: 10 * ms, Latency: map[string]time.Duration{"x": time.Second}}, model: "m", n: 3,
			first: 10 * ms, second: 10 * ms, last: 10 * ms, end: 10 * ms},
		{name: "zero", cfg: Config{}, model: "m", n: 100},
		{name: "negative", cfg: Config{TTFT: -ms, TokensPerSecond: -1, Latency: map[string]time.Duration{"m": -ms}}, model: "m", n: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(tt.cfg).paceFor(tt.model, tt.n)
			got := []time.Duration{p.at(0), p.at(min(1, tt.n-1)), p.at(tt.n - 1), p.end}
			want := []time.Duration{tt.first, tt.second, tt.last, tt.end}
			for i := range got {
				if d := got[i] - want[i]; d < -time.Microsecond || d > time.Microsecond {
					t.Errorf("first, second, last, end = %v, want %v", got, want)
					break
				}
			}
		})
	}
}

func TestClientCancel(t *testing.T) {
	srv := startServer(t, Config{Latency: map[string]time.Duration{"slow": time.Hour}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := srv.client(0).CreateChatCompletionStream(ctx, chatRequestFor("slow", "As of 2023-03-15:", "Anything new?"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	// TTFT is zero, so the first token comes at once; later ones need an hour.
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if got := srv.sim.Stats().Models["slow"].InFlight; got != 1 {
		t.Fatalf("in flight %d while streaming, want 1", got)
	}
	cancel()

	waitCtx, waitCancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer waitCancel()
	if err := srv.sim.WaitIdle(waitCtx); err != nil {
		t.Fatalf("generation did not stop after the client left: %v", err)
	}
	if st := srv.sim.Stats(); st.Total.InFlight != 0 || st.Models["slow"].InFlight != 0 || st.Total.PeakInFlight != 1 {
		t.Errorf("stats after cancel %+v", st)
	}
}

func TestBadRequests(t *testing.T) {
	srv := startServer(t, Config{})
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name, method, path, body, words string
		status                          int
		code                            string
	}{
		{name: "not json", body: `{"model":`, status: 400, code: "invalid_json"},
		{name: "not an object", body: `[1,2]`, status: 400, code: "invalid_json"},
		{name: "trailing data", body: `{"model":"m",` + msgs + `} {}`, status: 400, code: "invalid_json"},
		{name: "wrong field type", body: `{"model":3,` + msgs + `}`, status: 400, code: "invalid_json"},
		{name: "no model", body: `{` + msgs + `}`, status: 400, code: "missing_model"},
		{name: "no messages", body: `{"model":"m","messages":[]}`, status: 400, code: "invalid_messages"},
		{name: "no role", body: `{"model":"m","messages":[{"content":"hi"}]}`, status: 400, code: "invalid_messages"},
		{name: "bad content", body: `{"model":"m","messages":[{"role":"user","content":42}]}`, status: 400, code: "invalid_messages"},
		{name: "bad format", body: `{"model":"m",` + msgs + `,"response_format":{"type":"yaml"}}`, status: 400, code: "invalid_response_format"},
		{name: "n=2", body: `{"model":"m",` + msgs + `,"n":2}`, status: 400, code: "unsupported_value"},
		{name: "negative max_tokens", body: `{"model":"m",` + msgs + `,"max_tokens":-1}`, status: 400, code: "invalid_value"},
		{name: "zero words", body: `{"model":"m",` + msgs + `}`, words: "0", status: 400, code: "invalid_header"},
		{name: "words not a number", body: `{"model":"m",` + msgs + `}`, words: "many", status: 400, code: "invalid_header"},
		{name: "too many words", body: `{"model":"m",` + msgs + `}`, words: strconv.Itoa(MaxWords + 1), status: 400, code: "invalid_header"},
		{name: "unknown route", method: "GET", path: "/v1/nothing", status: 404, code: "unknown_url"},
		{name: "wrong method", method: "GET", path: "/v1/chat/completions", status: 405, code: "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path := cmp.Or(tt.method, http.MethodPost), cmp.Or(tt.path, "/v1/chat/completions")
			req, err := http.NewRequestWithContext(t.Context(), method, srv.url+path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.words != "" {
				req.Header.Set(WordsHeader, tt.words)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error *struct {
					Message string `json:"message"`
					Type    string `json:"type"`
					Code    string `json:"code"`
				} `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("error body is not JSON: %v", err)
			}
			if resp.StatusCode != tt.status || body.Error == nil || body.Error.Code != tt.code ||
				body.Error.Message == "" || body.Error.Type != "invalid_request_error" {
				t.Errorf("status %d, error %+v; want %d with code %q", resp.StatusCode, body.Error, tt.status, tt.code)
			}
		})
	}
	if st := srv.sim.Stats(); st.Total.Requests != 0 {
		t.Errorf("rejected requests were counted: %+v", st)
	}

	// go-openai turns the error body into an *openai.APIError.
	_, err := srv.client(0).CreateChatCompletion(t.Context(), openai.ChatCompletionRequest{Model: "m"})
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 400 || apiErr.Code != "invalid_messages" {
		t.Errorf("go-openai error %#v, want an APIError with status 400", err)
	}
}

func TestOtherEndpoints(t *testing.T) {
	srv := startServer(t, Config{Latency: map[string]time.Duration{"b": 0, "a": 0}})
	ctx := t.Context()

	models, err := srv.client(0).ListModels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(models.Models) != 2 || models.Models[0].ID != "a" || models.Models[1].ID != "b" {
		t.Errorf("models %+v, want a and b", models.Models)
	}
	model, err := srv.client(0).GetModel(ctx, "anything")
	if err != nil || model.ID != "anything" {
		t.Errorf("GetModel: %+v, %v", model, err)
	}

	get := func(method, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, srv.url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	if code, body := get("GET", "/healthz"); code != 200 || body != "ok" {
		t.Errorf("healthz: %d %q", code, body)
	}

	if _, err := srv.client(0).CreateChatCompletion(ctx, chatRequestFor("a", "hi")); err != nil {
		t.Fatal(err)
	}
	if err := srv.sim.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	code, body := get("GET", "/sim/stats")
	var st Stats
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("stats: %d %q", code, body)
	}
	want := Counters{Requests: 1, PeakInFlight: 1}
	if st.Total != want || st.Models["a"] != want {
		t.Errorf("stats %s, want total and model a %+v", body, want)
	}
	for _, key := range []string{`"total"`, `"models"`, `"requests"`, `"in_flight"`, `"peak_in_flight"`, `"streamed_tokens"`} {
		if !strings.Contains(body, key) {
			t.Errorf("stats %s lacks %s", body, key)
		}
	}
	if code, body := get("POST", "/sim/stats/reset"); code != 200 || !strings.Contains(body, `"requests":0`) {
		t.Errorf("reset: %d %q", code, body)
	}
	if st := srv.sim.Stats(); st.Total.Requests != 0 {
		t.Errorf("stats after reset %+v", st)
	}
}

func TestParseLatency(t *testing.T) {
	tests := []struct {
		spec    string
		want    map[string]time.Duration
		wantErr bool
	}{
		{spec: "", want: map[string]time.Duration{}},
		{spec: "  ", want: map[string]time.Duration{}},
		{spec: "sim-snapshot=1s,sim-extract=300ms, sim-narrative = 0",
			want: map[string]time.Duration{"sim-snapshot": time.Second, "sim-extract": 300 * time.Millisecond, "sim-narrative": 0}},
		{spec: "a=1s,", wantErr: true},
		{spec: "a", wantErr: true},
		{spec: "=1s", wantErr: true},
		{spec: "a=soon", wantErr: true},
		{spec: "a=-1s", wantErr: true},
		{spec: "a=1s,a=2s", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseLatency(tt.spec)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseLatency(%q) error %v, want error %v", tt.spec, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !maps.Equal(got, tt.want) {
			t.Errorf("ParseLatency(%q) = %v, want %v", tt.spec, got, tt.want)
		}
	}
}

// BenchmarkStream measures streaming throughput with zero delays.
func BenchmarkStream(b *testing.B) {
	sim := New(Config{})
	ts := httptest.NewServer(sim)
	defer ts.Close()
	cfg := openai.DefaultConfig("k")
	cfg.BaseURL = ts.URL + "/v1"
	client := openai.NewClientWithConfig(cfg)
	req := chatRequestFor("m", "As of 2023-03-15:", "What are the best AI models?")
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := readStream(context.Background(), client, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
