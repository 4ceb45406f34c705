package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
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
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: policy.control}
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

// Close closes the Sender's idle connections to receivers, so that
// nothing of it outlives the process's shutdown. Call it once the
// deliveries have ended.
func (s *Sender) Close() { s.client.CloseIdleConnections() }

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
	// Err says what went wrong, in fixed words that name neither the URL
	// nor an address ("post: connection refused", "refused: address not
	// allowed: port not allowed"); nil when delivered.
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
		// Not the error itself: it quotes the URL.
		return Result{Err: errors.New("build request: invalid URL")}
	}
	req.Header = h
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "timetravel-webhook/1")
	resp, err := s.client.Do(req)
	if err != nil {
		// A refused address is final; timeouts and network errors are not.
		if reason := refusal(err); reason != nil {
			return Result{Err: &sendError{phrase: "refused: " + reason.Error(), err: err}}
		}
		return Result{Retry: true, Err: &sendError{phrase: "post: " + failure(err), err: err}}
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

// sendError is a failed attempt, shown as a fixed phrase: the errors of
// the HTTP client name the URL (which may carry the receiver's own token in
// its query) and the address dialled (which a client must not learn of a
// name that resolves to a refused one); the error is recorded on the job,
// sent in its events and logged. It unwraps to the client's error.
type sendError struct {
	phrase string
	err    error
}

func (e *sendError) Error() string { return e.phrase }
func (e *sendError) Unwrap() error { return e.err }

// refusal returns the policy's reason when the dialer refused the address,
// else nil.
func refusal(err error) error {
	for _, reason := range []error{errPort, errPrivate, errNetwork} {
		if errors.Is(err, reason) {
			return reason
		}
	}
	return nil
}

// failure names the kind of a failed connection or exchange in fixed words.
func failure(err error) string {
	var dns *net.DNSError
	var ne net.Error
	var cert *tls.CertificateVerificationError
	var alert tls.AlertError
	var rec tls.RecordHeaderError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &dns):
		return "host does not resolve"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &cert) || errors.As(err, &alert) || errors.As(err, &rec):
		return "TLS handshake failed"
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the receiver"
	}
	return "connection failed"
}
