package llmsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// WordsHeader is the request header that asks for an exact number of words
// (tokens) in a prose answer, for tests and benchmarks. It is ignored in JSON
// mode.
const WordsHeader = "X-Llmsim-Words"

// MaxWords is the largest value accepted in [WordsHeader].
const MaxWords = 100_000

// maxBodyBytes bounds the size of a request body.
const maxBodyBytes = 8 << 20

// Config sets the timing of the simulated models. The zero value answers
// immediately.
type Config struct {
	// TTFT is the time to first token of models without a fixed latency.
	TTFT time.Duration
	// TokensPerSecond paces the tokens after the first one for models
	// without a fixed latency. Zero (or a negative, NaN or infinite value)
	// means no delay between tokens.
	TokensPerSecond float64
	// Latency maps a model name to the total duration of each of its
	// responses. For such a model the first token comes at min(TTFT, latency),
	// the other tokens are spread evenly over the rest, and the last one
	// comes at the latency; a non-streaming response is sent after the
	// latency. Models not listed take TTFT + tokens/TokensPerSecond.
	Latency map[string]time.Duration
	// Faults are the fault rules of the models (see [FaultRule]), at most
	// one per model; rules set at run time through POST /sim/faults or
	// [Server.SetRuntimeFaults] take precedence. A request can also force
	// faults with [FaultHeader].
	Faults []FaultRule
	// FaultSeed seeds the fault decisions (see [PickFault]); zero means
	// [DefaultFaultSeed].
	FaultSeed uint64
	// RetryAfter is the delay a 429 fault asks for; zero or less means
	// [DefaultRetryAfter].
	RetryAfter time.Duration
	// SlowFirstToken is the earliest time of the first token under the
	// slow_first_token fault; zero or less means [DefaultSlowFirstToken].
	SlowFirstToken time.Duration
	// Words, when positive, is the exact number of words (so of tokens,
	// and of content chunks when streamed) of every prose answer whose
	// request does not set [WordsHeader]: benchmarks use it to fix the
	// length of answers that the service asks for. Zero (or less) keeps
	// the default lengths; it is capped at [MaxWords]. JSON mode answers
	// are not affected.
	Words int
	// Logger receives debug logs about requests; nil discards them.
	Logger *slog.Logger
}

// Server is the simulator. It implements [http.Handler]; create it with
// [New]. It is safe for concurrent use.
type Server struct {
	cfg       Config
	log       *slog.Logger
	mux       *http.ServeMux
	stats     *stats
	faults    *faultTable
	seq       atomic.Uint64
	closed    chan struct{} // closed by Close
	closeOnce sync.Once
}

// New returns a simulator with the given configuration. Negative durations
// count as zero (or as the default where the field says so); cfg.Latency
// and cfg.Faults are copied. New panics when a rule of cfg.Faults fails
// [FaultRule.Validate] or two rules name the same model: check rules with
// [ParseFaults] or [FaultRule.Validate] first.
func New(cfg Config) *Server {
	cfg.TTFT = max(cfg.TTFT, 0)
	cfg.Words = min(max(cfg.Words, 0), MaxWords)
	if math.IsNaN(cfg.TokensPerSecond) || math.IsInf(cfg.TokensPerSecond, 0) || cfg.TokensPerSecond < 0 {
		cfg.TokensPerSecond = 0
	}
	latency := make(map[string]time.Duration, len(cfg.Latency))
	for model, d := range cfg.Latency {
		latency[model] = max(d, 0)
	}
	cfg.Latency = latency
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.FaultSeed == 0 {
		cfg.FaultSeed = DefaultFaultSeed
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.SlowFirstToken <= 0 {
		cfg.SlowFirstToken = DefaultSlowFirstToken
	}
	for i, r := range cfg.Faults {
		if err := r.Validate(); err != nil {
			panic(fmt.Sprintf("llmsim: Config.Faults[%d]: %v", i, err))
		}
		if slices.ContainsFunc(cfg.Faults[:i], func(o FaultRule) bool { return o.Model == r.Model }) {
			panic(fmt.Sprintf("llmsim: Config.Faults[%d]: model %q has two rules", i, r.Model))
		}
	}
	faults := newFaultTable(cfg.FaultSeed, cfg.Faults)
	cfg.Faults = nil // the table owns the rules

	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), stats: newStats(), faults: faults,
		closed: make(chan struct{})}
	routes := map[string]http.HandlerFunc{
		"POST /v1/chat/completions": s.handleChat,
		"GET /v1/models":            s.handleModels,
		"GET /v1/models/{model}":    s.handleModel,
		"GET /healthz":              s.handleHealth,
		"GET /sim/stats":            s.handleStats,
		"POST /sim/stats/reset":     s.handleReset,
		"GET /sim/faults":           s.handleGetFaults,
		"POST /sim/faults":          s.handleSetFaults,
		"DELETE /sim/faults":        s.handleClearFaults,
	}
	paths := make(map[string]bool)
	for pattern, h := range routes {
		s.mux.HandleFunc(pattern, h)
		_, path, _ := strings.Cut(pattern, " ")
		paths[path] = true
	}
	for path := range paths {
		// The same path with any other method gets an OpenAI-style 405.
		s.mux.HandleFunc(path, s.handleMethodNotAllowed)
	}
	s.mux.HandleFunc("/", s.handleNotFound)
	return s
}

// ServeHTTP implements [http.Handler].
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Stats returns a snapshot of the request counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// ResetStats zeroes the request, fault and token counts and lowers each peak to the
// current number of requests in flight. Request numbering for fault
// decisions starts again from 1 for every model.
func (s *Server) ResetStats() { s.stats.reset() }

// SetRuntimeFaults installs rule, replacing the runtime rule of the same
// model if any. Runtime rules take precedence over Config.Faults; a rule
// with a Count lasts for that many requests of the model. It returns the
// error of [FaultRule.Validate], and then changes nothing.
func (s *Server) SetRuntimeFaults(rule FaultRule) error {
	if err := s.faults.set(rule); err != nil {
		return fmt.Errorf("llmsim: %w", err)
	}
	return nil
}

// ClearRuntimeFaults removes the runtime rules of the given models, or all
// runtime rules when none is given. Config.Faults rules stay.
func (s *Server) ClearRuntimeFaults(models ...string) { s.faults.clear(models...) }

// Faults returns the fault rules in force.
func (s *Server) Faults() FaultState { return s.faults.state() }

// Close ends the requests held by the hang fault (their connections are
// aborted) and makes later hang faults end at once the same way. Other
// requests are not affected. Call it when the HTTP server shuts down, e.g.
// with [http.Server.RegisterOnShutdown], so that hung requests do not hold
// up a graceful shutdown. It is safe to call more than once.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.closed) }) }

// WaitIdle blocks until no chat completion is in flight or ctx ends. A
// request counts as finished once its handler has returned, which happens
// promptly after its client disconnects.
func (s *Server) WaitIdle(ctx context.Context) error { return s.stats.waitIdle(ctx) }

// WaitInFlight blocks until at least n chat completions of model (of any
// model when model is "") are in flight, or ctx ends. Tests use it to act
// while requests are being answered, e.g. held by the hang fault.
func (s *Server) WaitInFlight(ctx context.Context, model string, n int64) error {
	return s.stats.waitInFlight(ctx, model, n)
}

// ParseLatency parses per-model latencies written as
// "model=duration,model=duration", for example
// "sim-snapshot=1s,sim-extract=300ms". Spaces around items are ignored; an
// empty string gives an empty map. Durations use [time.ParseDuration] syntax
// and must not be negative; a model may appear only once.
func ParseLatency(spec string) (map[string]time.Duration, error) {
	out := make(map[string]time.Duration)
	if strings.TrimSpace(spec) == "" {
		return out, nil
	}
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		i := strings.LastIndexByte(item, '=')
		if i < 0 {
			return nil, fmt.Errorf("latency item %q: want model=duration", item)
		}
		model, value := strings.TrimSpace(item[:i]), strings.TrimSpace(item[i+1:])
		if model == "" {
			return nil, fmt.Errorf("latency item %q: empty model name", item)
		}
		if _, dup := out[model]; dup {
			return nil, fmt.Errorf("latency item %q: model %q given twice", item, model)
		}
		d, err := time.ParseDuration(value)
		if err != nil {
			return nil, fmt.Errorf("latency item %q: %w", item, err)
		}
		if d < 0 {
			return nil, fmt.Errorf("latency item %q: negative duration", item)
		}
		out[model] = d
	}
	return out, nil
}

// apiError is an OpenAI-style error, written as {"error":{...}}.
type apiError struct {
	status  int
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code"`
}

func (e *apiError) Error() string { return e.Message }

func invalid(code, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...),
		Type: "invalid_request_error", Code: code}
}

func (s *Server) writeError(w http.ResponseWriter, e *apiError) {
	s.writeJSON(w, e.status, map[string]*apiError{"error": e})
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		s.log.Debug("write response", "error", err)
	}
}

func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, &apiError{status: http.StatusNotFound, Type: "invalid_request_error", Code: "unknown_url",
		Message: fmt.Sprintf("Unknown request URL: %s %s.", r.Method, r.URL.Path)})
}

func (s *Server) handleMethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, &apiError{status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
		Message: fmt.Sprintf("Method %s is not allowed for %s.", r.Method, r.URL.Path)})
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok")
}

func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	s.writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) handleReset(w http.ResponseWriter, _ *http.Request) {
	s.ResetStats()
	s.writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) handleGetFaults(w http.ResponseWriter, _ *http.Request) {
	s.writeJSON(w, http.StatusOK, s.Faults())
}

// handleSetFaults installs the runtime rule in the body, a [FaultRule] as
// JSON.
func (s *Server) handleSetFaults(w http.ResponseWriter, r *http.Request) {
	var rule FaultRule
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rule); err != nil {
		s.writeError(w, invalid("invalid_json", "We could not parse the fault rule: %v.", err))
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		s.writeError(w, invalid("invalid_json", "The request body must hold a single JSON object."))
		return
	}
	if err := s.faults.set(rule); err != nil {
		s.writeError(w, invalid("invalid_fault_rule", "%v.", err))
		return
	}
	s.log.Debug("runtime fault rule set", "model", rule.Model, "faults", rule.Faults, "count", rule.Count)
	s.writeJSON(w, http.StatusOK, s.Faults())
}

// handleClearFaults removes the runtime rules of the models named by
// ?model= (repeatable), or all of them.
func (s *Server) handleClearFaults(w http.ResponseWriter, r *http.Request) {
	s.ClearRuntimeFaults(r.URL.Query()["model"]...)
	s.writeJSON(w, http.StatusOK, s.Faults())
}

// modelObject is an entry of GET /v1/models.
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// defaultModel is listed when no latency is configured; any name is accepted.
const defaultModel = "sim-default"

func (s *Server) models() []string {
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range s.cfg.Latency {
			if !yield(name) {
				return
			}
		}
	})
	if len(names) == 0 {
		names = []string{defaultModel}
	}
	return names
}

// handleModels lists the models with a configured latency (or a default
// one). Chat completions accept any model name.
func (s *Server) handleModels(w http.ResponseWriter, _ *http.Request) {
	data := []modelObject{}
	for _, name := range s.models() {
		data = append(data, modelObject{ID: name, Object: "model", OwnedBy: "llmsim"})
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

// handleModel describes one model; every name exists.
func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, modelObject{ID: r.PathValue("model"), Object: "model", OwnedBy: "llmsim"})
}

// chatRequest is the part of an OpenAI chat completion request the simulator
// reads; other fields are ignored.
type chatRequest struct {
	Model         string        `json:"model"`
	Messages      []wireMessage `json:"messages"`
	Stream        bool          `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	ResponseFormat *struct {
		Type string `json:"type"`
	} `json:"response_format"`
	MaxTokens           int `json:"max_tokens"`
	MaxCompletionTokens int `json:"max_completion_tokens"`
	N                   int `json:"n"`
}

type wireMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// call is a validated chat completion request.
type call struct {
	prompt
	stream       bool
	includeUsage bool
	maxTokens    int         // 0 for no limit
	forced       []FaultKind // from FaultHeader
}

// decodeChat reads and validates a chat completion request. wordsHeader is the
// value of [WordsHeader], possibly empty.
func decodeChat(body io.Reader, wordsHeader string) (*call, *apiError) {
	var req chatRequest
	dec := json.NewDecoder(body)
	if err := dec.Decode(&req); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, &apiError{status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error",
				Code: "request_too_large", Message: fmt.Sprintf("Request body is larger than %d bytes.", maxBodyBytes)}
		}
		return nil, invalid("invalid_json", "We could not parse the JSON body of your request: %v.", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid("invalid_json", "The request body must hold a single JSON object.")
	}

	c := &call{stream: req.Stream}
	c.model = req.Model
	if req.Model == "" {
		return nil, invalid("missing_model", "You must provide a model parameter.")
	}
	if len(req.Messages) == 0 {
		return nil, invalid("invalid_messages", "'messages' must be a non-empty array.")
	}
	for i, m := range req.Messages {
		if m.Role == "" {
			return nil, invalid("invalid_messages", "messages[%d].role is required.", i)
		}
		text, ok := contentText(m.Content)
		if !ok {
			return nil, invalid("invalid_messages", "messages[%d].content must be a string or an array of content parts.", i)
		}
		c.messages = append(c.messages, message{role: m.Role, text: text})
	}
	if f := req.ResponseFormat; f != nil {
		switch f.Type {
		case "", "text":
		case "json_object", "json_schema":
			c.jsonMode = true
		default:
			return nil, invalid("invalid_response_format", "Unsupported response_format type %q.", f.Type)
		}
	}
	if req.N > 1 {
		return nil, invalid("unsupported_value", "The simulator supports only n=1.")
	}
	if req.MaxTokens < 0 || req.MaxCompletionTokens < 0 {
		return nil, invalid("invalid_value", "max_tokens and max_completion_tokens must not be negative.")
	}
	c.maxTokens = req.MaxCompletionTokens
	if c.maxTokens == 0 {
		c.maxTokens = req.MaxTokens
	}
	c.includeUsage = req.Stream && req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	if wordsHeader != "" {
		n, err := strconv.Atoi(strings.TrimSpace(wordsHeader))
		if err != nil || n < 1 || n > MaxWords {
			return nil, invalid("invalid_header", "Header %s must be an integer from 1 to %d.", WordsHeader, MaxWords)
		}
		c.words = n
	}
	return c, nil
}

// contentText returns the text of a message content: a string, null, or an
// array of parts whose "text" parts are joined.
func contentText(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, true
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", false
	}
	var texts []string
	for _, p := range parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n"), true
}

// tokenize splits text into tokens: each word with its following space.
// Joining the tokens gives the text back.
func tokenize(text string) []string {
	toks := strings.SplitAfter(text, " ")
	if len(toks) > 0 && toks[len(toks)-1] == "" {
		toks = toks[:len(toks)-1]
	}
	return toks
}

// promptTokens estimates the prompt size in tokens as its number of words.
func promptTokens(msgs []message) int {
	n := 0
	for _, m := range msgs {
		n += len(strings.Fields(m.text))
	}
	return max(n, 1)
}

// pace says when each token of a response is due, relative to its start.
type pace struct {
	first time.Duration // the first token
	step  float64       // nanoseconds between tokens
	end   time.Duration // the whole response
}

// paceFor returns the pace of a response of n >= 1 tokens from model.
func (s *Server) paceFor(model string, n int) pace {
	if l, ok := s.cfg.Latency[model]; ok {
		p := pace{first: min(s.cfg.TTFT, l), end: l}
		if n > 1 {
			p.step = float64(l-p.first) / float64(n-1)
		}
		return p
	}
	p := pace{first: s.cfg.TTFT, end: s.cfg.TTFT}
	if s.cfg.TokensPerSecond > 0 {
		p.step = 1e9 / s.cfg.TokensPerSecond
		p.end = durationOf(float64(p.first) + p.step*float64(n))
	}
	return p
}

// at returns when token i is due.
func (p pace) at(i int) time.Duration {
	return durationOf(float64(p.first) + p.step*float64(i))
}

// durationOf converts nanoseconds to a Duration, saturating instead of
// overflowing.
func durationOf(ns float64) time.Duration {
	if ns >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(ns)
}

// clock waits for due times relative to a start, reusing one timer.
type clock struct {
	start time.Time
	timer *time.Timer
}

// waitUntil blocks until offset after the start, or until ctx ends. An
// offset of zero or less never waits nor reads the time.
func (c *clock) waitUntil(ctx context.Context, offset time.Duration) error {
	if offset > 0 {
		if d := offset - time.Since(c.start); d > 0 {
			if c.timer == nil {
				c.timer = time.NewTimer(d)
			} else {
				c.timer.Reset(d)
			}
			select {
			case <-c.timer.C:
			case <-ctx.Done():
				return fmt.Errorf("wait for token: %w", context.Cause(ctx))
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wait for token: %w", err)
	}
	return nil
}

func (c *clock) stop() {
	if c.timer != nil {
		c.timer.Stop()
	}
}

// usage is the token accounting of a response.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type delta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

type chunkChoice struct {
	Index        int     `json:"index"`
	Delta        delta   `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

type chunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []chunkChoice `json:"choices"`
	Usage   *usage        `json:"usage,omitempty"`
}

type completionChoice struct {
	Index        int     `json:"index"`
	Message      delta   `json:"message"`
	FinishReason string  `json:"finish_reason"`
	Logprobs     *string `json:"logprobs"`
}

type completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   usage              `json:"usage"`
}

// handleChat answers POST /v1/chat/completions.
func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	c, apiErr := decodeChat(http.MaxBytesReader(w, r.Body, maxBodyBytes), r.Header.Get(WordsHeader))
	if apiErr == nil {
		c.forced, apiErr = parseFaultHeader(r.Header.Values(FaultHeader))
	}
	if apiErr != nil {
		s.log.Debug("bad chat request", "status", apiErr.status, "code", apiErr.Code, "error", apiErr.Message)
		s.writeError(w, apiErr)
		return
	}
	if c.words == 0 {
		c.words = s.cfg.Words
	}
	n, endStats := s.stats.begin(c.model)
	// A request stops counting as in flight just before the last bytes of
	// its answer are written, so that a client that has read the whole
	// answer never sees it still counted (a capped client may then send the
	// next request at once).
	var endOnce sync.Once
	end := func() { endOnce.Do(endStats) }
	defer end()
	clk := &clock{start: time.Now()}
	defer clk.stop()
	f := s.planFaults(c, n, r.Header)
	ctx := r.Context()

	id := "chatcmpl-sim-" + strconv.FormatUint(s.seq.Add(1), 10)
	logDone := func(tokens int, err error) {
		s.log.Debug("chat completion", "id", id, "model", c.model, "n", n, "stream", c.stream,
			"faults", f.kinds, "tokens", tokens, "duration", time.Since(clk.start), "error", err)
	}
	switch {
	case f.status != nil:
		if f.status.status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", retryAfterSeconds(s.cfg.RetryAfter))
			w.Header().Set("Retry-After-Ms", strconv.FormatInt(s.cfg.RetryAfter.Milliseconds(), 10))
		}
		end()
		s.writeError(w, f.status)
		logDone(0, f.status)
		return
	case f.hang:
		select {
		case <-ctx.Done():
			logDone(0, fmt.Errorf("hang: %w", context.Cause(ctx)))
		case <-s.closed:
			logDone(0, errors.New("hang: simulator closed"))
		}
		panic(http.ErrAbortHandler)
	}

	text := generate(c.prompt)
	if f.badJSON {
		text = malformJSON(text)
	}
	tokens := tokenize(text)
	finish := "stop"
	if c.maxTokens > 0 && len(tokens) > c.maxTokens {
		tokens, finish = tokens[:c.maxTokens], "length"
	}
	u := usage{PromptTokens: promptTokens(c.messages), CompletionTokens: len(tokens)}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	p := s.paceFor(c.model, len(tokens))
	if f.slow && s.cfg.SlowFirstToken > p.first {
		shift := s.cfg.SlowFirstToken - p.first
		p.first += shift
		p.end += shift
	}
	breakAt := -1
	if f.brk {
		breakAt = len(tokens) / 2
	}
	created := clk.start.Unix()

	var err error
	if c.stream {
		err = s.stream(ctx, w, clk, p, tokens, breakAt, finish, c, u, id, created, end)
	} else if f.brk {
		if err = clk.waitUntil(ctx, p.end/2); err == nil {
			err = errBreak
		}
	} else if err = clk.waitUntil(ctx, p.end); err == nil {
		end()
		s.writeJSON(w, http.StatusOK, completion{
			ID: id, Object: "chat.completion", Created: created, Model: c.model, Usage: u,
			Choices: []completionChoice{{
				Message:      delta{Role: "assistant", Content: strings.Join(tokens, "")},
				FinishReason: finish,
			}},
		})
	}
	logDone(len(tokens), err)
	if errors.Is(err, errBreak) {
		panic(http.ErrAbortHandler)
	}
}

// errBreak ends a response broken by the break fault.
var errBreak = errors.New("break fault: connection aborted mid-answer")

// faultPlan is what the faults of one request do.
type faultPlan struct {
	kinds   []FaultKind // injected, as counted in the stats
	status  *apiError   // 429, 500, 503 or 401 instead of the answer
	hang    bool
	slow    bool
	brk     bool
	badJSON bool
}

// planFaults decides the faults of request number n of c's model: those
// forced by FaultHeader, else the rule's pick; and counts them. h is the
// request's header, which the 401 fault quotes.
func (s *Server) planFaults(c *call, n int64, h http.Header) faultPlan {
	kinds := c.forced
	if len(kinds) == 0 {
		if k, ok := s.faults.pick(c.model, n); ok {
			kinds = []FaultKind{k}
		}
	}
	var f faultPlan
	for _, k := range kinds {
		switch k {
		case FaultRateLimit:
			f.status = &apiError{status: http.StatusTooManyRequests, Type: "requests", Code: "rate_limit_exceeded",
				Message: fmt.Sprintf("Rate limit reached for %s (simulated). Please try again in %s.", c.model, s.cfg.RetryAfter)}
		case FaultServerError:
			f.status = &apiError{status: http.StatusInternalServerError, Type: "server_error", Code: "server_error",
				Message: "The server had an error while processing your request (simulated). Sorry about that!"}
		case FaultUnavailable:
			f.status = &apiError{status: http.StatusServiceUnavailable, Type: "server_error", Code: "service_unavailable",
				Message: "The engine is currently overloaded, please try again later (simulated)."}
		case FaultUnauthorized:
			// Quoted whole, as a careless provider would: the point of the
			// fault is a key in an error's text.
			creds := h.Get("Authorization")
			if creds == "" {
				creds = h.Get("api-key")
			}
			f.status = &apiError{status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
				Message: fmt.Sprintf("Incorrect API key provided: %q (simulated). You can find your API key in your account settings.", creds)}
		case FaultHang:
			f.hang = true
		case FaultSlowFirstToken:
			f.slow = true
		case FaultBreak:
			f.brk = true
		case FaultBadJSON:
			if !c.jsonMode {
				continue // only JSON mode answers can be bad JSON
			}
			f.badJSON = true
		}
		f.kinds = append(f.kinds, k)
		s.stats.countFault(c.model, k)
	}
	return f
}

// malformJSON turns a JSON answer into text that is not valid JSON: a label,
// then the first half of the JSON.
func malformJSON(text string) string {
	i := len(text) / 2
	for i > 0 && !utf8.RuneStart(text[i]) {
		i--
	}
	return "[Simulated malformed JSON] " + text[:i]
}

// stream writes tokens as server-sent events, one token per chunk, at the
// pace p. It returns early when ctx ends or a write fails. With breakAt >= 0
// it returns errBreak when token breakAt is due, having sent the tokens
// before it; the caller must then abort the connection. done is called just
// before the final chunks are written.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, clk *clock, p pace,
	tokens []string, breakAt int, finish string, c *call, u usage, id string, created int64, done func(),
) error {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return fmt.Errorf("flush headers: %w", err)
	}

	send := func(v any) error {
		buf, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode chunk: %w", err)
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", buf); err != nil {
			return fmt.Errorf("write chunk: %w", err)
		}
		if err := rc.Flush(); err != nil {
			return fmt.Errorf("flush chunk: %w", err)
		}
		return nil
	}
	ck := chunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: c.model,
		Choices: []chunkChoice{{}}}
	for i, tok := range tokens {
		if err := clk.waitUntil(ctx, p.at(i)); err != nil {
			return err
		}
		if i == breakAt {
			return errBreak
		}
		ck.Choices[0].Delta = delta{Content: tok}
		if i == 0 {
			ck.Choices[0].Delta.Role = "assistant"
		}
		if err := send(ck); err != nil {
			return err
		}
		s.stats.countToken(c.model)
	}
	if err := clk.waitUntil(ctx, p.end); err != nil {
		return err
	}
	if breakAt >= 0 {
		return errBreak
	}
	done()
	ck.Choices[0] = chunkChoice{FinishReason: &finish}
	if err := send(ck); err != nil {
		return err
	}
	if c.includeUsage {
		ck.Choices, ck.Usage = []chunkChoice{}, &u
		if err := send(ck); err != nil {
			return err
		}
	}
	if _, err := io.WriteString(w, "data: [DONE]\n\n"); err != nil {
		return fmt.Errorf("write done: %w", err)
	}
	if err := rc.Flush(); err != nil {
		return fmt.Errorf("flush done: %w", err)
	}
	return nil
}
