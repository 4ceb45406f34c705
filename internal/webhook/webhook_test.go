package webhook

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

const (
	secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}

func TestValidateURL(t *testing.T) {
	t.Parallel()
	open := Policy{}
	local := Policy{AllowHTTP: true, Allow: loopback}
	cases := []struct {
		name   string
		policy Policy
		url    string
		ok     bool
		why    string
	}{
		{"public literal https", open, "https://93.184.215.14/hook", true, ""},
		{"http refused", open, "http://93.184.215.14/hook", false, "https"},
		{"other scheme", open, "ftp://93.184.215.14/x", false, "scheme"},
		{"javascript", open, "javascript:alert(1)", false, "scheme"},
		{"malformed", open, "https://[::1", false, "invalid"},
		{"relative", open, "/hook", false, "scheme"},
		{"credentials", open, "https://user:pw@93.184.215.14/", false, "credentials"},
		{"no host", open, "https:///hook", false, "no host"},
		{"loopback", open, "https://127.0.0.1/hook", false, "not a public"},
		{"loopback v6", open, "https://[::1]/hook", false, "not a public"},
		{"private 10/8", open, "https://10.1.2.3/hook", false, "not a public"},
		{"private 192.168", open, "https://192.168.0.10/hook", false, "not a public"},
		{"link-local metadata", open, "https://169.254.169.254/latest/meta-data", false, "not a public"},
		{"aws v6 metadata", open, "https://[fd00:ec2::254]/", false, "not a public"},
		{"multicast", open, "https://224.0.0.1/", false, "not a public"},
		{"v4-mapped loopback", open, "https://[::ffff:127.0.0.1]/", false, "not a public"},
		{"localhost name", open, "https://localhost/hook", false, "not a public"},
		{"allow-listed loopback over http", local, "http://127.0.0.1:8080/hook", true, ""},
		{"allow-list does not admit other private", local, "http://10.0.0.1/hook", false, "not a public"},
		{"too long", open, "https://93.184.215.14/" + strings.Repeat("a", 2100), false, "longer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := c.policy.ValidateURL(context.Background(), c.url)
			if c.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrURL) || !strings.Contains(err.Error(), c.why) {
				t.Fatalf("got %v, want ErrURL mentioning %q", err, c.why)
			}
		})
	}
}

func TestSignatureVerifiesWithEitherSecretDuringRotation(t *testing.T) {
	t.Parallel()
	s, err := NewSigner(secretB, secretA)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"type":"job.completed"}`)
	h, err := s.Headers("msg_1", time.Now(), body)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{secretA, secretB} {
		wh, _ := standardwebhooks.NewWebhook(secret)
		if err := wh.Verify(body, h); err != nil {
			t.Fatalf("verify with %s…: %v", secret[:10], err)
		}
	}
	other, _ := standardwebhooks.NewWebhook("whsec_" + strings.Repeat("QUJD", 8))
	if err := other.Verify(body, h); err == nil {
		t.Fatal("a third secret verified the delivery")
	}
	if err := mustVerifier(t, secretB).Verify([]byte(`{"tampered":1}`), h); err == nil {
		t.Fatal("a changed body verified")
	}
}

func mustVerifier(t *testing.T, secret string) *standardwebhooks.Webhook {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	return wh
}

func TestNewSignerRejectsBadSecretsWithoutEchoingThem(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plainsecret", "whsec_***not-base64***"} {
		_, err := NewSigner(s, "")
		if err == nil {
			t.Fatalf("secret %q accepted", s)
		}
		if s != "" && strings.Contains(err.Error(), s) {
			t.Fatalf("error %q contains the secret", err)
		}
	}
}

func newSender(t *testing.T, p Policy, timeout time.Duration) *Sender {
	t.Helper()
	s, err := NewSigner(secretA, "")
	if err != nil {
		t.Fatal(err)
	}
	return NewSender(p, s, timeout)
}

func TestSendOutcomes(t *testing.T) {
	t.Parallel()
	var redirectedHit atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { redirectedHit.Store(true) }))
	defer target.Close()
	cases := []struct {
		name      string
		handler   http.HandlerFunc
		delivered bool
		retry     bool
		after     time.Duration
	}{
		{"200 delivered", func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if mustVerifier(t, secretA).Verify(body, r.Header) != nil || r.Header.Get("webhook-id") != "msg_x" {
				w.WriteHeader(http.StatusUnauthorized)
			}
		}, true, false, 0},
		{"204 delivered", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }, true, false, 0},
		{"410 stops", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusGone) }, false, false, 0},
		{"400 stops", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadRequest) }, false, false, 0},
		{"408 retries", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusRequestTimeout) }, false, true, 0},
		{"429 retries with Retry-After", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(http.StatusTooManyRequests)
		}, false, true, 2 * time.Minute},
		{"500 retries", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }, false, true, 0},
		{"redirect not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL, http.StatusFound)
		}, false, false, 0},
	}
	s := newSender(t, Policy{AllowHTTP: true, Allow: loopback}, 5*time.Second)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(c.handler)
			defer srv.Close()
			r := s.Send(context.Background(), srv.URL, "msg_x", []byte(`{"a":1}`))
			if r.Delivered != c.delivered || r.Retry != c.retry || r.RetryAfter != c.after || (r.Err == nil) != c.delivered {
				t.Fatalf("result %+v", r)
			}
		})
	}
	if redirectedHit.Load() {
		t.Fatal("the redirect target was contacted")
	}
}

func TestSendTimesOutSlowReceiver(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	r := newSender(t, Policy{AllowHTTP: true, Allow: loopback}, 200*time.Millisecond).Send(context.Background(), srv.URL, "m", nil)
	if r.Delivered || !r.Retry || r.Err == nil {
		t.Fatalf("slow receiver: %+v", r)
	}
}

// A name that resolves to 127.0.0.1 passes no check without the allow-list:
// the dialer refuses it even if submission-time validation was skipped (DNS
// rebinding).
func TestSendRefusesLoopbackAtDialTime(t *testing.T) {
	t.Parallel()
	var hit atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit.Store(true) }))
	defer srv.Close()
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	r := newSender(t, Policy{AllowHTTP: true}, 2*time.Second).Send(context.Background(), url, "m", nil)
	if r.Delivered || r.Retry || r.Err == nil || !strings.Contains(r.Err.Error(), "refused") {
		t.Fatalf("result %+v, want refused for good", r)
	}
	if hit.Load() {
		t.Fatal("the receiver was contacted")
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	cases := []struct {
		n     int
		after time.Duration
		want  time.Duration
	}{
		{0, 0, 5 * time.Second},
		{1, 0, 5 * time.Minute},
		{6, 0, 10 * time.Hour},
		{99, 0, 10 * time.Hour},
		{0, time.Minute, time.Minute},
		{1, time.Second, 5 * time.Minute},
		{0, 100 * time.Hour, 10 * time.Hour},
	}
	for _, c := range cases {
		if got := RetryDelay(c.n, c.after); got != c.want {
			t.Errorf("RetryDelay(%d, %v) = %v, want %v", c.n, c.after, got, c.want)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	t.Parallel()
	got, err := ParsePrefixes(" 127.0.0.1, 10.1.0.0/16 ,::1")
	if err != nil || len(got) != 3 || got[0].String() != "127.0.0.1/32" || got[1].String() != "10.1.0.0/16" || got[2].String() != "::1/128" {
		t.Fatalf("ParsePrefixes = %v, %v", got, err)
	}
	if _, err := ParsePrefixes("not-an-ip"); err == nil {
		t.Fatal("bad prefix accepted")
	}
}
