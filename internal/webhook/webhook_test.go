package webhook

import (
	"context"
	"errors"
	"io"
	"net"
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

// The reasons a callback URL is refused, exactly as clients read them.
const (
	whyPrivate = "invalid callback URL: address not allowed: not a public address (private or local)"
	whyHost    = "invalid callback URL: address not allowed: not a public host (private, local or unresolvable)"
	whyPort    = "invalid callback URL: address not allowed: port not allowed"
	whyHTTPS   = "invalid callback URL: scheme must be https"
)

func TestValidateURL(t *testing.T) {
	t.Parallel()
	open := Policy{DeniedPorts: []uint16{6379, 8080}}
	local := Policy{AllowHTTP: true, Allow: loopback}
	ported := Policy{AllowHTTP: true, DeniedPorts: []uint16{6379, 9090}, AllowEntries: mustAllow(t, "127.0.0.1:9000, 10.0.0.0/8, [::1]:9001, 192.168.0.0/16:6379")}
	cases := []struct {
		name   string
		policy Policy
		url    string
		want   string // the whole error; "" for accepted
	}{
		{"public literal https", open, "https://93.184.215.14/hook", ""},
		{"public literal on another port", open, "https://93.184.215.14:8443/hook", ""},
		{"http refused", open, "http://93.184.215.14/hook", whyHTTPS},
		{"other scheme", open, "ftp://93.184.215.14/x", whyHTTPS},
		{"other scheme with http allowed", local, "ftp://127.0.0.1/x", "invalid callback URL: scheme must be https or http"},
		{"javascript", open, "javascript:alert(1)", whyHTTPS},
		{"malformed", open, "https://[::1", "invalid callback URL: not a valid URL"},
		{"relative", open, "/hook", whyHTTPS},
		{"credentials", open, "https://user:pw@93.184.215.14/", "invalid callback URL: must not contain credentials"},
		{"no host", open, "https:///hook", "invalid callback URL: has no host"},
		{"fragment", open, "https://93.184.215.14/#x", "invalid callback URL: must not have a fragment"},
		{"bad port", open, "https://93.184.215.14:0/", "invalid callback URL: invalid port"},
		{"loopback", open, "https://127.0.0.1/hook", whyPrivate},
		{"loopback v6", open, "https://[::1]/hook", whyPrivate},
		{"private 10/8", open, "https://10.1.2.3/hook", whyPrivate},
		{"private 192.168", open, "https://192.168.0.10/hook", whyPrivate},
		{"link-local metadata", open, "https://169.254.169.254/latest/meta-data", whyPrivate},
		{"aws v6 metadata", open, "https://[fd00:ec2::254]/", whyPrivate},
		{"multicast", open, "https://224.0.0.1/", whyPrivate},
		{"v4-mapped loopback", open, "https://[::ffff:127.0.0.1]/", whyPrivate},
		{"localhost name", open, "https://localhost/hook", whyHost},
		{"name that does not resolve", open, "https://no-such-host.invalid/hook", whyHost},
		{"denied port on a public address", open, "https://93.184.215.14:6379/", whyPort},
		{"denied port, default of the scheme", Policy{DeniedPorts: []uint16{443}}, "https://93.184.215.14/", whyPort},
		{"allow-listed loopback over http", local, "http://127.0.0.1:8080/hook", ""},
		{"allow-list does not admit other private", local, "http://10.0.0.1/hook", whyPrivate},
		{"allow-listed loopback on its port", ported, "http://127.0.0.1:9000/hook", ""},
		{"allow-listed loopback on another port", ported, "http://127.0.0.1:9001/hook", whyPort},
		{"allow-listed v6 loopback on its port", ported, "http://[::1]:9001/hook", ""},
		{"allow-listed v6 loopback on another port", ported, "http://[::1]:9000/hook", whyPort},
		{"allow-listed range on any port", ported, "http://10.9.8.7:1234/hook", ""},
		{"allow-listed range, denied port", ported, "http://10.9.8.7:9090/hook", whyPort},
		{"entry naming a denied port admits nothing", ported, "http://192.168.1.1:6379/hook", whyPort},
		{"localhost on an allow-listed port", Policy{AllowHTTP: true, AllowEntries: mustAllow(t, "127.0.0.1:9000,[::1]:9000")}, "http://localhost:9000/", ""},
		{"localhost on another port", Policy{AllowHTTP: true, AllowEntries: mustAllow(t, "127.0.0.1:9000,[::1]:9000")}, "http://localhost:9001/", whyHost},
		{"too long", open, "https://93.184.215.14/" + strings.Repeat("a", 2100), "invalid callback URL: longer than 2048 characters"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := c.policy.ValidateURL(context.Background(), c.url)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrURL) || err.Error() != c.want {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

func mustAllow(t *testing.T, s string) []AllowEntry {
	t.Helper()
	e, err := ParseAllowList(s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// A name that resolves to a refused address gets the answer of a name
// that does not resolve: neither names the address.
func TestValidateURLNamesNoResolvedAddress(t *testing.T) {
	t.Parallel()
	// A resolver whose every answer is the metadata address.
	dns := fakeDNS(t, netip.MustParseAddr("169.254.169.254"))
	p := Policy{Resolver: dns}
	err := p.ValidateURL(context.Background(), "https://metadata.google.internal/computeMetadata/v1/")
	if err == nil || err.Error() != whyHost {
		t.Fatalf("got %v, want %q", err, whyHost)
	}
	for _, s := range []string{"169.254", "resolves"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q names the resolution (%q)", err, s)
		}
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

// The dialer refuses what the policy refuses, even if submission-time
// validation was skipped or DNS changed since (rebinding): a name that
// resolves to 127.0.0.1 without the allow-list, a denied port on an
// allow-listed address. A refusal is final; its error names neither the
// address nor the URL.
func TestSendRefusesAtDialTime(t *testing.T) {
	t.Parallel()
	var hit atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit.Store(true) }))
	defer srv.Close()
	port := uint16(srv.Listener.Addr().(*net.TCPAddr).Port)
	byName := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/hook?token=tok-123"
	tests := []struct {
		name   string
		policy Policy
		url    string
		want   string
	}{
		{"loopback name", Policy{AllowHTTP: true}, byName, "refused: address not allowed: not a public address (private or local)"},
		{"denied port", Policy{AllowHTTP: true, Allow: loopback, DeniedPorts: []uint16{port}}, srv.URL + "/hook?token=tok-123", "refused: address not allowed: port not allowed"},
		{"allow-listed on another port", Policy{AllowHTTP: true, AllowEntries: mustAllow(t, "127.0.0.1:1,[::1]:1")}, byName, "refused: address not allowed: port not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newSender(t, tt.policy, 2*time.Second).Send(context.Background(), tt.url, "m", nil)
			if r.Delivered || r.Retry || r.Err == nil || r.Err.Error() != tt.want {
				t.Fatalf("result %+v, want refused for good: %q", r, tt.want)
			}
		})
	}
	if hit.Load() {
		t.Fatal("the receiver was contacted")
	}
}

// A failed attempt says what failed in fixed words, without the URL (its
// query may hold the receiver's token) or the address.
func TestSendErrorsNameNoAddress(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	closed := srv.URL + "/hook?token=tok-123"
	srv.Close()
	r := newSender(t, Policy{AllowHTTP: true, Allow: loopback}, 2*time.Second).Send(context.Background(), closed, "m", nil)
	if r.Delivered || !r.Retry || r.Err == nil || r.Err.Error() != "post: connection refused" {
		t.Fatalf("result %+v, want a retry after %q", r, "post: connection refused")
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

func TestParseAllowList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string // the entries' String, joined by " "; "" with wantErr
		err  bool
	}{
		{in: "", want: ""},
		{in: " 127.0.0.1, 10.1.0.0/16 ,::1", want: "127.0.0.1/32 10.1.0.0/16 ::1/128"},
		{in: "10.1.2.3/16", want: "10.1.0.0/16"},
		{in: "127.0.0.1:9000", want: "127.0.0.1/32:9000"},
		{in: "10.0.0.0/8:8443", want: "10.0.0.0/8:8443"},
		{in: "[fd00::/8]:8443", want: "[fd00::/8]:8443"},
		{in: "[::1]:9000", want: "[::1/128]:9000"},
		{in: "[::1]", want: "::1/128"},
		{in: "fd00::/8", want: "fd00::/8"},
		{in: "::ffff:127.0.0.1", want: "127.0.0.1/32"},
		{in: "[::ffff:10.0.0.0/104]:80", want: "10.0.0.0/8:80"},
		{in: "not-an-ip", err: true},
		{in: "127.0.0.1:0", err: true},
		{in: "127.0.0.1:65536", err: true},
		{in: "127.0.0.1:http", err: true},
		{in: "10.0.0.0/33", err: true},
		{in: "[::1", err: true},
		{in: "[::1]9000", err: true},
		{in: "fe80::1%eth0", err: true},
	}
	for _, tt := range tests {
		got, err := ParseAllowList(tt.in)
		if tt.err {
			if err == nil {
				t.Errorf("ParseAllowList(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		var s []string
		for _, e := range got {
			s = append(s, e.String())
		}
		if err != nil || strings.Join(s, " ") != tt.want {
			t.Errorf("ParseAllowList(%q) = %v, %v; want %s", tt.in, s, err, tt.want)
		}
	}
}

// fakeDNS returns a resolver whose server, on loopback, answers every A
// question with addr (and every AAAA question with no address).
func fakeDNS(t *testing.T, addr netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			if resp := dnsAnswer(buf[:n], addr); resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}
	}()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
}

// dnsAnswer answers a DNS query of one question: an A record of addr for
// type A, nothing for other types; nil for what it cannot read.
func dnsAnswer(q []byte, addr netip.Addr) []byte {
	if len(q) < 12 {
		return nil
	}
	end := 12
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	end += 5 // the root label, type and class
	if end > len(q) {
		return nil
	}
	qtype := uint16(q[end-4])<<8 | uint16(q[end-3])
	var answers uint16
	if qtype == 1 {
		answers = 1
	}
	resp := append([]byte{q[0], q[1], 0x81, 0x80, 0, 1, byte(answers >> 8), byte(answers), 0, 0, 0, 0}, q[12:end]...)
	if answers == 1 {
		a := addr.As4()
		resp = append(resp, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
		resp = append(resp, a[:]...)
	}
	return resp
}
