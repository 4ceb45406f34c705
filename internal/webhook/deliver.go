package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Sender makes delivery attempts. It is safe for concurrent use.
type Sender struct {
	client  *http.Client
	signer  *Signer
	timeout time.Duration
	now     func() time.Time
}

// NewSender returns a Sender whose connections pass policy's address check
// at dial time, with a per-attempt timeout.
func NewSender(policy Policy, signer *Signer, timeout time.Duration) *Sender {
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: policy.guardian().Safe}
	tr := &http.Transport{
		Proxy:                 nil, // never a proxy from the environment
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &Sender{
		client: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse // redirects are not followed
			},
		},
		signer:  signer,
		timeout: timeout,
		now:     time.Now,
	}
}

// Result is the outcome of one attempt.
type Result struct {
	// StatusCode is the receiver's answer; 0 when there was none.
	StatusCode int
	// Delivered: the receiver answered 2xx.
	Delivered bool
	// Retry: a later attempt may succeed (timeouts, connection errors, 408,
	// 429, 5xx). Without it, the delivery has failed for good.
	Retry bool
	// RetryAfter is the receiver's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Err says what went wrong; nil when delivered.
	Err error
}

// Send makes one attempt to POST body to target with id as the webhook-id.
func (s *Sender) Send(ctx context.Context, target, id string, body []byte) Result {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	h, err := s.signer.Headers(id, s.now(), body)
	if err != nil {
		return Result{Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return Result{Err: fmt.Errorf("build request: %w", err)}
	}
	req.Header = h
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "timetravel-webhook/1")
	resp, err := s.client.Do(req)
	if err != nil {
		// The URL may carry the receiver's own token in its query: errors
		// are recorded on the job and logged, so they leave it out.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		// A refused address is final; timeouts and network errors are not.
		if isRefused(err) {
			return Result{Err: fmt.Errorf("refused: %w", err)}
		}
		return Result{Retry: true, Err: fmt.Errorf("post: %w", err)}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return classify(resp)
}

func classify(resp *http.Response) Result {
	r := Result{StatusCode: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		r.Delivered = true
		return r
	case code == http.StatusGone:
		r.Err = errors.New("receiver answered 410 Gone: not retrying")
	case code >= 300 && code < 400:
		r.Err = fmt.Errorf("receiver answered %d: redirects are not followed", code)
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		r.Retry = true
		r.Err = fmt.Errorf("receiver answered %d", code)
	default:
		r.Err = fmt.Errorf("receiver answered %d: not retrying", code)
	}
	return r
}

// retryAfter reads delay-seconds or an HTTP date; zero when absent or bad.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

func isRefused(err error) bool {
	var ne *net.OpError
	if errors.As(err, &ne) && ne.Op == "dial" {
		return errors.Is(err, errProhibited)
	}
	return false
}
