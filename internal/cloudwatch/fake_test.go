package cloudwatch_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go/encoding/cbor"
)

// putPath is where the rpc-v2-cbor protocol of CloudWatch (the SDK's
// since 2025) posts PutMetricData.
const putPath = "/service/GraniteServiceVersion20100801/operation/PutMetricData"

// putRequest is a decoded PutMetricData request.
type putRequest struct {
	Namespace  string
	MetricData []datum
	// Bytes is the size of the payload, uncompressed.
	Bytes int
	// Signed reports a SigV4 Authorization header.
	Signed bool
}

type datum struct {
	MetricName     string
	Unit           string
	Dimensions     map[string]string
	Values, Counts []float64
	Timestamp      time.Time
}

// fakeCloudWatch stands in for the CloudWatch endpoint: it decodes each
// PutMetricData request (CBOR, gzip-compressed or not) and answers with
// status (200: an empty body; otherwise a CBOR error document).
type fakeCloudWatch struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	status   int
	requests []putRequest
	// arrived, when set, receives a value when a request arrives; the
	// handler then waits for release.
	arrived chan struct{}
	release chan struct{}
}

func newFake(t *testing.T) *fakeCloudWatch {
	f := &fakeCloudWatch{t: t, status: http.StatusOK}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCloudWatch) setStatus(s int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = s
}

func (f *fakeCloudWatch) got() []putRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]putRequest(nil), f.requests...)
}

func (f *fakeCloudWatch) serve(w http.ResponseWriter, r *http.Request) {
	req, err := decodePut(r)
	if err != nil {
		f.t.Errorf("fake CloudWatch: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.requests = append(f.requests, req)
	status, arrived, release := f.status, f.arrived, f.release
	f.mu.Unlock()
	if arrived != nil {
		arrived <- struct{}{}
		<-release
	}
	w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
	w.Header().Set("Content-Type", "application/cbor")
	if status == http.StatusOK {
		w.WriteHeader(status)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(cbor.Encode(cbor.Map{"__type": cbor.String("InternalServiceFault"), "message": cbor.String("simulated failure")}))
}

// decodePut checks the protocol's headers and decodes the body.
func decodePut(r *http.Request) (putRequest, error) {
	var out putRequest
	if r.Method != http.MethodPost || r.URL.Path != putPath {
		return out, fmt.Errorf("unexpected %s %s", r.Method, r.URL.Path)
	}
	if p := r.Header.Get("Smithy-Protocol"); p != "rpc-v2-cbor" {
		return out, fmt.Errorf("Smithy-Protocol %q", p)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/cbor" {
		return out, fmt.Errorf("Content-Type %q", ct)
	}
	out.Signed = strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ")
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return out, err
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		return out, err
	}
	out.Bytes = len(raw)
	v, err := cbor.Decode(raw)
	if err != nil {
		return out, fmt.Errorf("decode CBOR: %w", err)
	}
	m, ok := plain(v).(map[string]any)
	if !ok {
		return out, fmt.Errorf("body is %T, not a map", plain(v))
	}
	out.Namespace, _ = m["Namespace"].(string)
	list, _ := m["MetricData"].([]any)
	for _, e := range list {
		dm, _ := e.(map[string]any)
		d := datum{Dimensions: map[string]string{}}
		d.MetricName, _ = dm["MetricName"].(string)
		d.Unit, _ = dm["Unit"].(string)
		if ts, ok := dm["Timestamp"].(time.Time); ok {
			d.Timestamp = ts
		}
		dims, _ := dm["Dimensions"].([]any)
		for _, x := range dims {
			xm, _ := x.(map[string]any)
			n, _ := xm["Name"].(string)
			val, _ := xm["Value"].(string)
			d.Dimensions[n] = val
		}
		for _, x := range asList(dm["Values"]) {
			d.Values = append(d.Values, x.(float64))
		}
		for _, x := range asList(dm["Counts"]) {
			d.Counts = append(d.Counts, x.(float64))
		}
		out.MetricData = append(out.MetricData, d)
	}
	return out, nil
}

func asList(v any) []any { l, _ := v.([]any); return l }

// plain turns a CBOR value into Go's: maps, lists, strings, float64 for
// every number, time.Time for an epoch timestamp (tag 1).
func plain(v cbor.Value) any {
	switch x := v.(type) {
	case cbor.Map:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = plain(e)
		}
		return m
	case cbor.List:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = plain(e)
		}
		return l
	case cbor.String:
		return string(x)
	case cbor.Uint:
		return float64(x)
	case cbor.NegInt:
		return -1 - float64(x)
	case cbor.Float32:
		return float64(x)
	case cbor.Float64:
		return float64(x)
	case cbor.Bool:
		return bool(x)
	case *cbor.Tag:
		if x.ID == 1 {
			if secs, ok := plain(x.Value).(float64); ok {
				return time.UnixMilli(int64(secs * 1000)).UTC()
			}
		}
		return plain(x.Value)
	case cbor.Slice:
		return bytes.Clone(x)
	}
	return nil
}
