// Package llm calls an OpenAI-compatible chat completion endpoint (OpenAI,
// Azure OpenAI, Ollama, vLLM, LiteLLM, the bundled simulator) through one
// pooled HTTP transport, in streaming and JSON modes, with a total and a
// first-token timeout. It classifies failures into retryable and permanent
// ones, whose text is a fixed phrase ("provider answered 401 (authentication
// failed)", "llm call timed out after 90s", "connection to the provider
// failed") that carries nothing of the provider's answer nor the request's
// URL: providers may echo credentials there. It reads the provider's
// Retry-After, and holds the one retry policy of the service (Policy,
// QueueDelay). A Client sends one request per call;
// package gateway adds limits, breakers, retries and fallbacks.
package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/timetravel-ai/timetravel/internal/config"
)

// Client calls one provider. It is safe for concurrent use; create one per
// provider and process. It sends exactly one request per call: retries,
// limits and fallbacks are the caller's (see package gateway).
type Client struct {
	oa         *openai.Client
	timeout    time.Duration
	firstToken time.Duration
}

// Options configure a Client.
type Options struct {
	// BaseURL is the API root; for azure, the resource endpoint.
	BaseURL string
	// APIKey authenticates; never logged.
	APIKey string
	// APIType is "openai" (any OpenAI-compatible endpoint) or "azure".
	APIType    string
	APIVersion string
	// Timeout bounds one request, from sending it to the last token.
	Timeout time.Duration
	// FirstTokenTimeout bounds the wait for the first token of a stream;
	// zero means none.
	FirstTokenTimeout time.Duration
	// Transport carries the requests; nil means a pooled transport of the
	// client's own (NewTransport). Share one between the clients of a
	// process.
	Transport http.RoundTripper
}

// New returns a Client for the default provider of cfg (the OPENAI_*
// variables).
func New(cfg config.LLM) *Client {
	return NewClient(Options{
		BaseURL: cfg.BaseURL, APIKey: cfg.APIKey, APIType: cfg.APIType, APIVersion: cfg.APIVersion,
		Timeout: cfg.Timeout, FirstTokenTimeout: cfg.FirstTokenTimeout,
	})
}

// NewClient returns a Client for one provider.
func NewClient(o Options) *Client {
	var oc openai.ClientConfig
	if o.APIType == "azure" {
		oc = openai.DefaultAzureConfig(o.APIKey, o.BaseURL)
		oc.APIVersion = o.APIVersion
	} else {
		oc = openai.DefaultConfig(o.APIKey)
		oc.BaseURL = strings.TrimRight(o.BaseURL, "/")
	}
	base := o.Transport
	if base == nil {
		base = NewTransport()
	}
	oc.HTTPClient = &http.Client{Transport: retryAfterTransport{base: base, now: time.Now}}
	return &Client{oa: openai.NewClientWithConfig(oc), timeout: o.Timeout, firstToken: o.FirstTokenTimeout}
}

// NewTransport returns the pooled transport shared by every call: many idle
// connections per host (all calls go to one provider), no proxy surprises
// beyond the standard environment variables, and bounded dial and TLS times.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Request is one chat completion.
type Request struct {
	Model       string
	System      string
	User        string
	MaxTokens   int
	Temperature float32
	// JSON asks for a JSON object answer (response_format json_object).
	JSON bool
	// Validate, if set, tells whether an answer of a non-streamed call is
	// usable (e.g. it parses). A Client ignores it; a gateway's Complete
	// runs it on each answer, in the call's goroutine before it returns,
	// and a non-nil error makes that answer a failure of kind ErrBadAnswer
	// that is asked again as Policy.RetryBadAnswer says. Streams ignore it:
	// their text has reached the caller before the answer is whole.
	Validate func(text string) error
}

// Response is a finished completion.
type Response struct {
	Text string
	// Model is the model that answered, as the provider names it.
	Model string
	// Requested is the model the answering request asked for: the call's
	// model, or one of its fallbacks when a gateway fell back.
	Requested        string
	PromptTokens     int
	CompletionTokens int
	// Attempts counts the requests sent for the call, failed ones included
	// (a Client sends one; a gateway may retry). Set on errors too.
	Attempts int
	// FirstToken is the time from sending the request to the first text.
	FirstToken time.Duration
	Duration   time.Duration
}

func (r Request) chat(stream bool) openai.ChatCompletionRequest {
	msgs := make([]openai.ChatCompletionMessage, 0, 2)
	if r.System != "" {
		msgs = append(msgs, openai.ChatCompletionMessage{Role: openai.ChatMessageRoleSystem, Content: r.System})
	}
	msgs = append(msgs, openai.ChatCompletionMessage{Role: openai.ChatMessageRoleUser, Content: r.User})
	req := openai.ChatCompletionRequest{
		Model:       r.Model,
		Messages:    msgs,
		MaxTokens:   r.MaxTokens,
		Temperature: r.Temperature,
		Stream:      stream,
	}
	if stream {
		req.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	}
	if r.JSON {
		req.ResponseFormat = &openai.ChatCompletionResponseFormat{Type: openai.ChatCompletionResponseFormatTypeJSONObject}
	}
	return req
}

// Stream runs the completion in streaming mode and hands each piece of text
// to onText as it arrives; an error from onText stops the call and is
// returned as is. The call is bounded by the timeout, and its first token by
// the first-token timeout (both ErrTimeout). A stream that ends without a
// finish reason is an error (ErrBrokenStream).
func (c *Client) Stream(ctx context.Context, r Request, onText func(string) error) (Response, error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	firstToken := func() {}
	if c.firstToken > 0 {
		var stop context.CancelCauseFunc
		ctx, stop = context.WithCancelCause(ctx)
		defer stop(nil)
		t := time.AfterFunc(c.firstToken, func() {
			stop(fmt.Errorf("%w: no first token within %s", ErrTimeout, c.firstToken))
		})
		defer t.Stop()
		firstToken = func() { t.Stop() }
	}
	start := time.Now()
	resp := Response{Model: r.Model, Requested: r.Model, Attempts: 1}
	s, err := c.oa.CreateChatCompletionStream(ctx, r.chat(true))
	if err != nil {
		return resp, classify(ctx, err)
	}
	defer s.Close()
	var (
		b        strings.Builder
		finished bool
	)
	for {
		// RecvRaw and a decoder of only the fields used here: decoding each
		// chunk into go-openai's full response type was a third of the
		// worker's CPU time at high throughput (bench throughput, pprof).
		raw, err := s.RecvRaw()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			resp.Text = b.String()
			return resp, classify(ctx, err)
		}
		var chunk streamChunk
		if err := json.Unmarshal(raw, &chunk); err != nil {
			resp.Text = b.String()
			// Not the decoder's error: it quotes the chunk.
			return resp, fmt.Errorf("%w: undecodable stream chunk", ErrBrokenStream)
		}
		if chunk.Model != "" {
			resp.Model = chunk.Model
		}
		if chunk.Usage != nil {
			resp.PromptTokens = chunk.Usage.PromptTokens
			resp.CompletionTokens = chunk.Usage.CompletionTokens
		}
		for _, ch := range chunk.Choices {
			if ch.FinishReason != "" {
				finished = true
				firstToken()
			}
			if t := ch.Delta.Content; t != "" {
				if resp.FirstToken == 0 {
					resp.FirstToken = time.Since(start)
					firstToken()
				}
				b.WriteString(t)
				if err := onText(t); err != nil {
					resp.Text = b.String()
					return resp, err
				}
			}
		}
	}
	resp.Text = b.String()
	resp.Duration = time.Since(start)
	if !finished {
		return resp, fmt.Errorf("%w: no finish reason after %d characters", ErrBrokenStream, b.Len())
	}
	return resp, nil
}

// streamChunk is the part of a chat.completion.chunk that Stream uses.
type streamChunk struct {
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

// bound returns the context of one request: a slot for the provider's
// Retry-After and the timeout.
func (c *Client) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx = withRetrySlot(ctx)
	if c.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, c.timeout, fmt.Errorf("%w after %s", ErrTimeout, c.timeout))
}

// Complete runs the completion without streaming, bounded by the timeout.
func (c *Client) Complete(ctx context.Context, r Request) (Response, error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	start := time.Now()
	resp := Response{Model: r.Model, Requested: r.Model, Attempts: 1}
	out, err := c.oa.CreateChatCompletion(ctx, r.chat(false))
	if err != nil {
		return resp, classify(ctx, err)
	}
	if len(out.Choices) == 0 {
		return resp, fmt.Errorf("%w: answer has no choices", ErrBadAnswer)
	}
	d := time.Since(start)
	if out.Model != "" {
		resp.Model = out.Model
	}
	resp.Text = out.Choices[0].Message.Content
	resp.PromptTokens, resp.CompletionTokens = out.Usage.PromptTokens, out.Usage.CompletionTokens
	resp.FirstToken, resp.Duration = d, d
	return resp, nil
}

type logKey struct{}

// WithLogger returns ctx carrying log, for the logs of the calls made with
// it (e.g. a logger with the job's id).
func WithLogger(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, logKey{}, log)
}

// LoggerFrom returns the logger ctx carries, or def.
func LoggerFrom(ctx context.Context, def *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(logKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	return def
}

type capacityWaitKey struct{}

// WithCapacityWait returns ctx asking the calls made with it to wait up to
// d for provider capacity, instead of the configured wait.
func WithCapacityWait(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, capacityWaitKey{}, d)
}

type backgroundKey struct{}

// WithBackground marks the calls made with ctx as background work (cache
// warming): they may only use the share of each provider's capacity set
// aside for it, so that they never crowd out the work people wait for.
func WithBackground(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// Background reports whether ctx marks background work.
func Background(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}

// CapacityWaitFrom returns the capacity wait ctx asks for, or def.
func CapacityWaitFrom(ctx context.Context, def time.Duration) time.Duration {
	if d, ok := ctx.Value(capacityWaitKey{}).(time.Duration); ok {
		return d
	}
	return def
}
