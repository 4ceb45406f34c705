package metrics

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHTTPMethod(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{http.MethodGet, "GET"},
		{http.MethodHead, "HEAD"},
		{http.MethodPost, "POST"},
		{http.MethodPut, "PUT"},
		{http.MethodPatch, "PATCH"},
		{http.MethodDelete, "DELETE"},
		{http.MethodOptions, "OPTIONS"},
		{http.MethodConnect, "CONNECT"},
		{http.MethodTrace, "TRACE"},
		{"get", MethodOther},
		{"BREW", MethodOther},
		{"", MethodOther},
	}
	for _, tt := range tests {
		if got := HTTPMethod(tt.in); got != tt.want {
			t.Errorf("HTTPMethod(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestStatusClass(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   string
	}{
		{0, "other"}, {99, "other"}, {100, "1xx"}, {101, "1xx"}, {200, "2xx"}, {204, "2xx"}, {299, "2xx"},
		{301, "3xx"}, {400, "4xx"}, {404, "4xx"}, {499, "4xx"}, {500, "5xx"}, {503, "5xx"}, {599, "5xx"},
		{600, "other"}, {-1, "other"},
	}
	for _, tt := range tests {
		if got := StatusClass(tt.status); got != tt.want {
			t.Errorf("StatusClass(%d) = %q, want %q", tt.status, got, tt.want)
		}
	}
}

// TestRegisterAPIHTTP: the api's registry exposes the HTTP collectors
// under their names and labels.
func TestRegisterAPIHTTP(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	RegisterAPI(reg)
	// Label values of their own, so that other tests' counts do not show.
	HTTPRequests.WithLabelValues("GET", "/test/register", "2xx").Add(0)
	HTTPRequestDuration.WithLabelValues("GET", "/test/register").Observe(0)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"timetravel_http_requests_total":           "method,route,status_class",
		"timetravel_http_request_duration_seconds": "method,route",
	}
	for _, mf := range mfs {
		labels, ok := want[mf.GetName()]
		if !ok {
			continue
		}
		delete(want, mf.GetName())
		var names []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			names = append(names, lp.GetName())
		}
		if got := strings.Join(names, ","); got != labels {
			t.Errorf("%s labels %s, want %s", mf.GetName(), got, labels)
		}
	}
	if len(want) > 0 {
		t.Errorf("not registered: %v", want)
	}
}
