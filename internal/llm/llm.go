// Package llm calls an OpenAI-compatible chat completion endpoint (OpenAI,
// Azure OpenAI, Ollama, vLLM, LiteLLM, the bundled simulator) through one
// pooled HTTP transport, in streaming and JSON modes, and classifies failures
// into retryable and permanent ones.
package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/timetravel-ai/timetravel/internal/config"
)

// Client is safe for concurrent use; create one per process.
type Client struct {
	oa      *openai.Client
	timeout time.Duration
}

// New returns a Client for the provider in cfg.
func New(cfg config.LLM) *Client {
	var oc openai.ClientConfig
	if cfg.APIType == "azure" {
		oc = openai.DefaultAzureConfig(cfg.APIKey, cfg.BaseURL)
		oc.APIVersion = cfg.APIVersion
	} else {
		oc = openai.DefaultConfig(cfg.APIKey)
		oc.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	}
	oc.HTTPClient = &http.Client{Transport: NewTransport()}
	return &Client{oa: openai.NewClientWithConfig(oc), timeout: cfg.Timeout}
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
}

// Response is a finished completion.
type Response struct {
	Text             string
	Model            string
	PromptTokens     int
	CompletionTokens int
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
// returned as is. The call is bounded by the configured timeout. A stream
// that ends without a finish reason is an error (ErrBrokenStream).
func (c *Client) Stream(ctx context.Context, r Request, onText func(string) error) (Response, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, ErrTimeout)
	defer cancel()
	start := time.Now()
	s, err := c.oa.CreateChatCompletionStream(ctx, r.chat(true))
	if err != nil {
		return Response{}, classify(ctx, err)
	}
	defer s.Close()
	var (
		b        strings.Builder
		resp     = Response{Model: r.Model}
		finished bool
	)
	for {
		chunk, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return resp, classify(ctx, err)
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
			}
			if t := ch.Delta.Content; t != "" {
				if resp.FirstToken == 0 {
					resp.FirstToken = time.Since(start)
				}
				b.WriteString(t)
				if err := onText(t); err != nil {
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

// Complete runs the completion without streaming, bounded by the timeout.
func (c *Client) Complete(ctx context.Context, r Request) (Response, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, ErrTimeout)
	defer cancel()
	start := time.Now()
	out, err := c.oa.CreateChatCompletion(ctx, r.chat(false))
	if err != nil {
		return Response{}, classify(ctx, err)
	}
	if len(out.Choices) == 0 {
		return Response{}, fmt.Errorf("%w: answer has no choices", ErrBadAnswer)
	}
	d := time.Since(start)
	return Response{
		Text: out.Choices[0].Message.Content, Model: out.Model,
		PromptTokens: out.Usage.PromptTokens, CompletionTokens: out.Usage.CompletionTokens,
		FirstToken: d, Duration: d,
	}, nil
}
