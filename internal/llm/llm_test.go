package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
)

// fakeProvider is a minimal OpenAI chat-completions endpoint. Each request's
// decoded body is sent on reqs; handle writes the answer.
type fakeProvider struct {
	srv  *httptest.Server
	reqs chan recorded
}

type recorded struct {
	method, path, auth string
	body               map[string]any
}

func newFake(t *testing.T, handle func(w http.ResponseWriter, r *http.Request)) *fakeProvider {
	t.Helper()
	f := &fakeProvider{reqs: make(chan recorded, 4)}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(raw, &body); err != nil {
			http.Error(w, "bad request body", http.StatusBadRequest)
			return
		}
		select {
		case f.reqs <- recorded{r.Method, r.URL.Path, r.Header.Get("Authorization"), body}:
		default:
		}
		handle(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// client returns a Client for the fake with the given call timeout.
func (f *fakeProvider) client(timeout time.Duration) *Client {
	return New(config.LLM{
		BaseURL: f.srv.URL + "/v1/",
		APIKey:  "test-key",
		APIType: "openai",
		Timeout: timeout,
	})
}

// request returns the first request the fake received.
func (f *fakeProvider) request(t *testing.T) recorded {
	t.Helper()
	select {
	case r := <-f.reqs:
		return r
	default:
		t.Fatal("the provider received no request")
		return recorded{}
	}
}

// sse writes SSE events, flushing after each.
type sse struct {
	w http.ResponseWriter
}

func startSSE(w http.ResponseWriter) sse {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	return sse{w}
}

func (s sse) data(v string) {
	fmt.Fprintf(s.w, "data: %s\n\n", v)
	s.w.(http.Flusher).Flush()
}

func (s sse) delta(text string) {
	b, _ := json.Marshal(text)
	s.data(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"sim-model-1","choices":[{"index":0,"delta":{"content":` + string(b) + `},"finish_reason":null}]}`)
}

func (s sse) finish(reason string) {
	s.data(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"sim-model-1","choices":[{"index":0,"delta":{},"finish_reason":"` + reason + `"}]}`)
}

func (s sse) usage(prompt, completion int) {
	s.data(fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"sim-model-1","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`, prompt, completion, prompt+completion))
}

func (s sse) done() { s.data("[DONE]") }

// collect returns an onText that appends each piece to *pieces.
func collect(pieces *[]string) func(string) error {
	return func(s string) error {
		*pieces = append(*pieces, s)
		return nil
	}
}

func TestStream(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		s := startSSE(w)
		s.data(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"sim-model-1","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}`)
		s.delta("Once ")
		s.delta("upon ")
		s.delta("a time.")
		s.finish("stop")
		s.usage(12, 3)
		s.done()
	})
	var pieces []string
	resp, err := f.client(30*time.Second).Stream(context.Background(), Request{
		Model: "gpt-4o", System: "You are terse.", User: "Tell a story.", MaxTokens: 123, Temperature: 0.5,
	}, collect(&pieces))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if want := []string{"Once ", "upon ", "a time."}; !reflect.DeepEqual(pieces, want) {
		t.Errorf("onText got %q, want %q", pieces, want)
	}
	if resp.Text != "Once upon a time." {
		t.Errorf("Text = %q", resp.Text)
	}
	if resp.Model != "sim-model-1" {
		t.Errorf("Model = %q, want the provider's sim-model-1", resp.Model)
	}
	if resp.PromptTokens != 12 || resp.CompletionTokens != 3 {
		t.Errorf("tokens = %d/%d, want 12/3", resp.PromptTokens, resp.CompletionTokens)
	}
	if resp.FirstToken <= 0 || resp.Duration < resp.FirstToken {
		t.Errorf("FirstToken = %v, Duration = %v", resp.FirstToken, resp.Duration)
	}

	req := f.request(t)
	if req.method != http.MethodPost || req.path != "/v1/chat/completions" {
		t.Errorf("request %s %s, want POST /v1/chat/completions", req.method, req.path)
	}
	if req.auth != "Bearer test-key" {
		t.Errorf("Authorization = %q", req.auth)
	}
	b := req.body
	if b["model"] != "gpt-4o" || b["stream"] != true || b["max_tokens"] != 123.0 || b["temperature"] != 0.5 {
		t.Errorf("request body = %v", b)
	}
	if so, _ := b["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Errorf("stream_options = %v, want include_usage true", b["stream_options"])
	}
	wantMsgs := []any{
		map[string]any{"role": "system", "content": "You are terse."},
		map[string]any{"role": "user", "content": "Tell a story."},
	}
	if !reflect.DeepEqual(b["messages"], wantMsgs) {
		t.Errorf("messages = %v, want %v", b["messages"], wantMsgs)
	}
	if _, ok := b["response_format"]; ok {
		t.Errorf("response_format = %v in a plain request", b["response_format"])
	}
}

func TestStreamWithoutSystemAndJSON(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		s := startSSE(w)
		s.delta(`{"a":1}`)
		s.finish("stop")
		s.done()
	})
	var pieces []string
	resp, err := f.client(30*time.Second).Stream(context.Background(), Request{Model: "gpt-4o", User: "u", JSON: true}, collect(&pieces))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if resp.Text != `{"a":1}` {
		t.Errorf("Text = %q", resp.Text)
	}
	b := f.request(t).body
	msgs, _ := b["messages"].([]any)
	if len(msgs) != 1 || msgs[0].(map[string]any)["role"] != "user" {
		t.Errorf("messages = %v, want only the user message", b["messages"])
	}
	if rf, _ := b["response_format"].(map[string]any); rf["type"] != "json_object" {
		t.Errorf("response_format = %v, want type json_object", b["response_format"])
	}
}

func TestStreamBroken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		handle   func(w http.ResponseWriter, r *http.Request)
		wantText string // the partial text returned, when the stream ended cleanly
	}{
		{
			name: "DONE without a finish reason",
			handle: func(w http.ResponseWriter, r *http.Request) {
				s := startSSE(w)
				s.delta("half an ")
				s.delta("answer")
				s.done()
			},
			wantText: "half an answer",
		},
		{
			name: "body ends without DONE or finish reason",
			handle: func(w http.ResponseWriter, r *http.Request) {
				s := startSSE(w)
				s.delta("half an ")
				s.delta("answer")
			},
			wantText: "half an answer",
		},
		{
			name: "no events at all",
			handle: func(w http.ResponseWriter, r *http.Request) {
				startSSE(w)
			},
		},
		{
			name: "connection cut mid-stream",
			handle: func(w http.ResponseWriter, r *http.Request) {
				s := startSSE(w)
				s.delta("half an ")
				panic(http.ErrAbortHandler)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, tt.handle)
			var pieces []string
			resp, err := f.client(30*time.Second).Stream(context.Background(), Request{Model: "gpt-4o", User: "u"}, collect(&pieces))
			if !errors.Is(err, ErrBrokenStream) {
				t.Fatalf("error = %v, want ErrBrokenStream", err)
			}
			if errors.Is(err, ErrTimeout) {
				t.Errorf("error %v also claims a timeout", err)
			}
			if !Retryable(err) {
				t.Errorf("Retryable(%v) = false", err)
			}
			if tt.wantText != "" && resp.Text != tt.wantText {
				t.Errorf("Text = %q, want the partial %q", resp.Text, tt.wantText)
			}
		})
	}
}

func TestStatusErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		status    int
		body      string
		want      string
		retryable bool
	}{
		{"429 with an OpenAI error", 429, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`, "provider answered 429 (rate limited)", true},
		{"429 with a plain body", 429, `too many requests`, "provider answered 429 (rate limited)", true},
		{"408", 408, `{"error":{"message":"request timeout","type":"timeout"}}`, "provider answered 408 (request timeout)", true},
		{"500 with a plain body", 500, `upstream exploded`, "provider answered 500 (server error)", true},
		{"502 with a long plain body", 502, strings.Repeat("x", 5000), "provider answered 502 (bad gateway)", true},
		{"503", 503, `{"error":{"message":"overloaded","type":"server_error"}}`, "provider answered 503 (unavailable)", true},
		{"400", 400, `{"error":{"message":"max_tokens is too large","type":"invalid_request_error"}}`, "provider answered 400 (bad request)", false},
		{"401", 401, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`, "provider answered 401 (authentication failed)", false},
		{"403", 403, `forbidden`, "provider answered 403 (permission denied)", false},
		{"404", 404, `{"error":{"message":"The model does not exist","type":"invalid_request_error","code":"model_not_found"}}`, "provider answered 404 (not found)", false},
		{"418", 418, `{"error":{"message":"teapot","type":"x"}}`, "provider answered 418 (client error)", false},
	}
	for _, tt := range tests {
		for _, mode := range []string{"Stream", "Complete"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
					if strings.HasPrefix(tt.body, "{") {
						w.Header().Set("Content-Type", "application/json")
					}
					w.WriteHeader(tt.status)
					io.WriteString(w, tt.body)
				})
				err := call(f.client(30*time.Second), mode, t)
				var se *StatusError
				if !errors.As(err, &se) {
					t.Fatalf("error = %v (%T), want a *StatusError", err, err)
				}
				if se.StatusCode != tt.status {
					t.Errorf("StatusCode = %d, want %d", se.StatusCode, tt.status)
				}
				if got := err.Error(); got != tt.want {
					t.Errorf("Error() = %q, want %q", got, tt.want)
				}
				if got := Retryable(err); got != tt.retryable {
					t.Errorf("Retryable = %v, want %v", got, tt.retryable)
				}
			})
		}
	}
}

// call makes one call in mode (Stream or Complete) and returns its error;
// a stream's text is a test failure.
func call(c *Client, mode string, t *testing.T) error {
	t.Helper()
	if mode == "Stream" {
		_, err := c.Stream(context.Background(), Request{Model: "gpt-4o", User: "u"}, func(string) error {
			t.Error("onText called for an error answer")
			return nil
		})
		return err
	}
	_, err := c.Complete(context.Background(), Request{Model: "gpt-4o", User: "u"})
	return err
}

// leakedKey is an API key that the providers below echo wherever they can.
const leakedKey = "sk-LEAK-0123456789abcdef"

// A provider that echoes the request's credentials (a 401 quoting the key,
// an error event in a stream, a key in the URL's query) leaves no trace of
// them in the error's text, whatever the failure; the kind of the failure
// stays what it was.
func TestErrorsNeverCarryTheProvidersWords(t *testing.T) {
	t.Parallel()
	echo := func(r *http.Request) string {
		return "Incorrect API key provided: " + r.Header.Get("Authorization") + r.Header.Get("api-key") + " at " + r.URL.String()
	}
	tests := []struct {
		name   string
		azure  bool   // the key goes in the api-key header, and in the URL below
		closed bool   // nothing listens
		only   string // Stream or Complete: the case applies to one mode
		handle func(w http.ResponseWriter, r *http.Request)
		want   string
		check  func(error) bool
	}{
		{name: "401 echoing the key as JSON", handle: func(w http.ResponseWriter, r *http.Request) {
			b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": echo(r), "type": "invalid_request_error", "code": r.Header.Get("Authorization")}})
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write(b)
		}, want: "provider answered 401 (authentication failed)", check: func(err error) bool { return !Retryable(err) }},
		{name: "401 echoing the key as text", handle: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Echo", r.Header.Get("Authorization"))
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, echo(r))
		}, want: "provider answered 401 (authentication failed)", check: func(err error) bool { return !Retryable(err) }},
		{name: "azure 403 echoing the api-key header", azure: true, handle: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": echo(r), "code": "403"}})
			w.Write(b)
		}, want: "provider answered 403 (permission denied)", check: func(err error) bool { return !Retryable(err) }},
		{name: "error event in a stream", handle: func(w http.ResponseWriter, r *http.Request) {
			s := startSSE(w)
			s.delta("half ")
			b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": echo(r), "type": "server_error"}})
			s.data(string(b))
		}, only: "Stream", want: phraseStreamError, check: func(err error) bool { return !Retryable(err) }},
		{name: "a 200 that is not JSON", handle: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, "<html>"+echo(r))
		}, only: "Complete", want: phraseOther, check: func(err error) bool { return !Retryable(err) }},
		{name: "connection cut", handle: func(w http.ResponseWriter, r *http.Request) {
			panic(http.ErrAbortHandler)
		}, want: phraseConnection, check: Retryable},
		{name: "nothing listens, the key in the azure URL", azure: true, closed: true,
			want: phraseConnection, check: Retryable},
	}
	for _, tt := range tests {
		for _, mode := range []string{"Stream", "Complete"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				if tt.only != "" && tt.only != mode {
					t.Skip("the case is of " + tt.only)
				}
				handle := tt.handle
				if handle == nil {
					handle = func(http.ResponseWriter, *http.Request) {}
				}
				f := newFake(t, handle)
				if tt.closed {
					f.srv.Close()
				}
				o := Options{BaseURL: f.srv.URL + "/v1?key=" + leakedKey, APIKey: leakedKey, APIType: "openai", Timeout: 30 * time.Second}
				if tt.azure {
					o.BaseURL, o.APIType, o.APIVersion = f.srv.URL+"/"+leakedKey+"/", "azure", "2024-06-01&key="+leakedKey
				}
				var err error
				c := NewClient(o)
				if mode == "Stream" {
					_, err = c.Stream(context.Background(), Request{Model: "gpt-4o", User: "u"}, func(string) error { return nil })
				} else {
					_, err = c.Complete(context.Background(), Request{Model: "gpt-4o", User: "u"})
				}
				if err == nil {
					t.Fatal("the call succeeded")
				}
				for _, text := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%s", fmt.Errorf("snapshot 2: %w", err))} {
					if strings.Contains(text, leakedKey) || strings.Contains(text, f.srv.URL) || strings.Contains(text, "Incorrect") {
						t.Errorf("error text %q has the provider's words, its URL or the key", text)
					}
				}
				if got := err.Error(); got != tt.want {
					t.Errorf("Error() = %q, want %q", got, tt.want)
				}
				if !tt.check(err) {
					t.Errorf("error %v (%T) classified wrongly: Retryable = %v", err, err, Retryable(err))
				}
			})
		}
	}
}

// The simulator's 401 fault quotes the key it was sent: the error says
// only the status and its category, streamed or not.
func TestSimulatorEchoingTheKey(t *testing.T) {
	t.Parallel()
	sim := llmsim.New(llmsim.Config{Faults: []llmsim.FaultRule{{Model: llmsim.AnyModel, Faults: []llmsim.Fault{{Kind: llmsim.FaultUnauthorized, Rate: 1}}}}})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	c := NewClient(Options{BaseURL: srv.URL + "/v1", APIKey: leakedKey, APIType: "openai", Timeout: 30 * time.Second})
	for _, mode := range []string{"Stream", "Complete"} {
		err := call(c, mode, t)
		var se *StatusError
		if !errors.As(err, &se) || se.StatusCode != http.StatusUnauthorized || Retryable(err) {
			t.Fatalf("%s: error %v, want a permanent 401", mode, err)
		}
		if got, want := err.Error(), "provider answered 401 (authentication failed)"; got != want {
			t.Errorf("%s: Error() = %q, want %q", mode, got, want)
		}
	}
	if n := sim.Stats().Total.Faults.Of(llmsim.FaultUnauthorized); n != 2 {
		t.Errorf("the simulator answered %d requests with its 401, want 2", n)
	}
}

// hang blocks until the client goes away.
func hang(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

func TestTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		handle func(w http.ResponseWriter, r *http.Request)
		stream bool
	}{
		{"stream, no headers", hang, true},
		{"stream, stalls after some text", func(w http.ResponseWriter, r *http.Request) {
			s := startSSE(w)
			s.delta("thinking")
			hang(w, r)
		}, true},
		{"complete, no answer", hang, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, tt.handle)
			c := f.client(time.Second)
			var err error
			if tt.stream {
				var pieces []string
				_, err = c.Stream(context.Background(), Request{Model: "gpt-4o", User: "u"}, collect(&pieces))
			} else {
				_, err = c.Complete(context.Background(), Request{Model: "gpt-4o", User: "u"})
			}
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("error = %v, want ErrTimeout", err)
			}
			if !Retryable(err) {
				t.Errorf("Retryable(%v) = false", err)
			}
		})
	}
}

func TestCallerCancel(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{})
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		hang(w, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	var pieces []string
	_, err := f.client(30*time.Second).Stream(ctx, Request{Model: "gpt-4o", User: "u"}, collect(&pieces))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	if errors.Is(err, ErrTimeout) {
		t.Errorf("a cancellation reported as a timeout: %v", err)
	}
	if Retryable(err) {
		t.Errorf("Retryable(%v) = true for a cancellation", err)
	}
}

func TestOnTextErrorStopsTheCall(t *testing.T) {
	t.Parallel()
	// The provider sends one piece and then waits for the client to leave:
	// the call can only end in time if it stops on onText's error.
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		s := startSSE(w)
		s.delta("first")
		hang(w, r)
	})
	stop := errors.New("client went away")
	calls := 0
	_, err := f.client(time.Minute).Stream(context.Background(), Request{Model: "gpt-4o", User: "u"}, func(s string) error {
		calls++
		if s != "first" {
			t.Errorf("onText(%q)", s)
		}
		return stop
	})
	if err != stop {
		t.Fatalf("error = %v, want onText's error as is", err)
	}
	if calls != 1 {
		t.Errorf("onText called %d times, want 1", calls)
	}
}

func TestOnTextErrorIgnoresLaterPieces(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		s := startSSE(w)
		s.delta("a")
		s.delta("b")
		s.delta("c")
		s.finish("stop")
		s.done()
	})
	stop := errors.New("enough")
	var pieces []string
	_, err := f.client(30*time.Second).Stream(context.Background(), Request{Model: "gpt-4o", User: "u"}, func(s string) error {
		pieces = append(pieces, s)
		if s == "b" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("error = %v, want %v", err, stop)
	}
	if want := []string{"a", "b"}; !reflect.DeepEqual(pieces, want) {
		t.Errorf("onText got %q, want %q", pieces, want)
	}
}

func TestCompleteJSON(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-2","object":"chat.completion","created":1,"model":"sim-mini",
			"choices":[{"index":0,"message":{"role":"assistant","content":"{\"transitions\":[]}"},"finish_reason":"stop"}],
			"usage":{"prompt_tokens":40,"completion_tokens":5,"total_tokens":45}}`)
	})
	resp, err := f.client(30*time.Second).Complete(context.Background(), Request{
		Model: "gpt-4o-mini", System: "Reply in JSON.", User: "Compare.", MaxTokens: 750, JSON: true,
	})
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if resp.Text != `{"transitions":[]}` || resp.Model != "sim-mini" || resp.PromptTokens != 40 || resp.CompletionTokens != 5 {
		t.Errorf("response = %+v", resp)
	}
	if resp.Duration <= 0 || resp.FirstToken != resp.Duration {
		t.Errorf("FirstToken = %v, Duration = %v; want equal and positive", resp.FirstToken, resp.Duration)
	}
	req := f.request(t)
	if req.path != "/v1/chat/completions" {
		t.Errorf("path = %q", req.path)
	}
	b := req.body
	if rf, _ := b["response_format"].(map[string]any); rf["type"] != "json_object" {
		t.Errorf("response_format = %v, want type json_object", b["response_format"])
	}
	if b["model"] != "gpt-4o-mini" || b["max_tokens"] != 750.0 {
		t.Errorf("request body = %v", b)
	}
	if s, ok := b["stream"]; ok && s != false {
		t.Errorf("stream = %v in a non-streaming call", s)
	}
	if _, ok := b["stream_options"]; ok {
		t.Errorf("stream_options = %v in a non-streaming call", b["stream_options"])
	}
}

func TestCompleteWithoutJSONSendsNoResponseFormat(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}`)
	})
	resp, err := f.client(30*time.Second).Complete(context.Background(), Request{Model: "gpt-4o", User: "u"})
	if err != nil || resp.Text != "hi" {
		t.Fatalf("Complete = %+v, %v", resp, err)
	}
	if rf, ok := f.request(t).body["response_format"]; ok {
		t.Errorf("response_format = %v without JSON", rf)
	}
}

func TestCompleteNoChoices(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id":"x","object":"chat.completion","model":"m","choices":[]}`)
	})
	_, err := f.client(30*time.Second).Complete(context.Background(), Request{Model: "gpt-4o", User: "u"})
	if !errors.Is(err, ErrBadAnswer) {
		t.Fatalf("error = %v, want ErrBadAnswer", err)
	}
	if Retryable(err) {
		t.Errorf("Retryable(%v) = true", err)
	}
}

func TestConnectionRefusedIsRetryable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := New(config.LLM{BaseURL: url + "/v1", APIType: "openai", Timeout: 30 * time.Second})
	_, err := c.Complete(context.Background(), Request{Model: "gpt-4o", User: "u"})
	if err == nil {
		t.Fatal("Complete against a closed server succeeded")
	}
	if errors.Is(err, ErrTimeout) {
		t.Errorf("connection refused reported as a timeout: %v", err)
	}
	if !Retryable(err) {
		t.Errorf("Retryable(%v) = false", err)
	}
}

func TestRetryAfterIsCaptured(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"Stream", "Complete"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Retry-After", "2")
				w.Header().Set("Retry-After-Ms", "1500")
				w.WriteHeader(http.StatusTooManyRequests)
				io.WriteString(w, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`)
			})
			c := f.client(30 * time.Second)
			var err error
			if mode == "Stream" {
				_, err = c.Stream(context.Background(), Request{Model: "m", User: "u"}, func(string) error { return nil })
			} else {
				_, err = c.Complete(context.Background(), Request{Model: "m", User: "u"})
			}
			var se *StatusError
			if !errors.As(err, &se) || se.StatusCode != 429 {
				t.Fatalf("error = %v, want a 429 StatusError", err)
			}
			if se.RetryAfter != 1500*time.Millisecond {
				t.Errorf("RetryAfter = %s, want 1.5s from Retry-After-Ms", se.RetryAfter)
			}
			if d, ok := RetryAfter(fmt.Errorf("call: %w", err)); !ok || d != 1500*time.Millisecond {
				t.Errorf("RetryAfter(err) = %s, %v", d, ok)
			}
		})
	}
}

func TestFirstTokenTimeout(t *testing.T) {
	t.Parallel()
	t.Run("headers, then nothing", func(t *testing.T) {
		t.Parallel()
		f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
			startSSE(w)
			hang(w, r)
		})
		c := NewClient(Options{BaseURL: f.srv.URL + "/v1", APIType: "openai", Timeout: time.Minute, FirstTokenTimeout: 200 * time.Millisecond})
		start := time.Now()
		resp, err := c.Stream(context.Background(), Request{Model: "m", User: "u"}, func(string) error { return nil })
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "no first token within 200ms") {
			t.Fatalf("error = %v, want a first-token timeout", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("the call took %s", d)
		}
		if !Retryable(err) || resp.Attempts != 1 || resp.Requested != "m" {
			t.Errorf("Retryable = %v, response %+v", Retryable(err), resp)
		}
	})
	t.Run("a slow stream after the first token is bounded by the total only", func(t *testing.T) {
		t.Parallel()
		f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
			s := startSSE(w)
			s.delta("a")
			time.Sleep(400 * time.Millisecond) // the provider's pace, past the first-token bound
			s.delta("b")
			s.finish("stop")
			s.done()
		})
		c := NewClient(Options{BaseURL: f.srv.URL + "/v1", APIType: "openai", Timeout: time.Minute, FirstTokenTimeout: 200 * time.Millisecond})
		resp, err := c.Stream(context.Background(), Request{Model: "m", User: "u"}, func(string) error { return nil })
		if err != nil || resp.Text != "ab" {
			t.Fatalf("Stream = %+v, %v", resp, err)
		}
	})
}
