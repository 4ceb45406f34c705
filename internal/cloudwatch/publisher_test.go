package cloudwatch_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	cw "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/hibiken/asynq"
	dto "github.com/prometheus/client_model/go"

	"github.com/timetravel-ai/timetravel/internal/cloudwatch"
	"github.com/timetravel-ai/timetravel/internal/metrics"
)

const (
	testKeyID  = "AKIDEXAMPLETESTKEY01"
	testSecret = "test-secret-access-key-never-logged"
)

// client is the real SDK client aimed at the fake, with static
// credentials; its retries wait no time.
func client(f *fakeCloudWatch, attempts int) *cw.Client {
	return cw.New(cw.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(f.srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(testKeyID, testSecret, ""),
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = attempts
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		}),
	})
}

var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fakeInspector map[string]int

func (f fakeInspector) Queues() ([]string, error) {
	var qs []string
	for q := range f {
		qs = append(qs, q)
	}
	slices.Sort(qs)
	return qs, nil
}

func (f fakeInspector) GetQueueInfo(q string) (*asynq.QueueInfo, error) {
	return &asynq.QueueInfo{Queue: q, Pending: f[q]}, nil
}

// find returns the datums of name with exactly dims.
func find(reqs []putRequest, name string, dims map[string]string) []datum {
	var out []datum
	for _, r := range reqs {
		for _, d := range r.MetricData {
			if d.MetricName != name || len(d.Dimensions) != len(dims) {
				continue
			}
			match := true
			for k, v := range dims {
				if d.Dimensions[k] != v {
					match = false
				}
			}
			if match {
				out = append(out, d)
			}
		}
	}
	return out
}

// observe records a few jobs and LLM calls, as the worker's would be.
func observe(o metrics.Observer) {
	o.ObserveJob("completed", map[string]int64{"total": 1500, "queue_wait": 20, "snapshots": 1200}, "snapshot", []int64{1000, 1200})
	o.ObserveJob("completed", map[string]int64{"total": 2250, "queue_wait": 20}, "snapshot", []int64{1000, 0})
	o.ObserveJob("failed", map[string]int64{"total": 30000}, "snapshot", nil)
	for _, r := range []metrics.LLMRequest{
		{Provider: "openai", Model: "gpt-4o", Outcome: metrics.OutcomeOK, Duration: 1200 * time.Millisecond},
		{Provider: "openai", Model: "gpt-4o", Outcome: metrics.OutcomeOK, Duration: 1200 * time.Millisecond},
		{Provider: "openai", Model: "gpt-4o", Outcome: metrics.OutcomeRateLimited, Duration: 50 * time.Millisecond},
		{Provider: "openai", Model: "gpt-4o", Outcome: metrics.OutcomeCanceled, Duration: 700 * time.Millisecond},
	} {
		o.ObserveLLMRequest(r)
	}
}

// TestPutMetricData records a few jobs, LLM calls and gauges, flushes, and
// finds each metric in the decoded requests: namespace, names, units,
// dimensions, values and counts.
func TestPutMetricData(t *testing.T) {
	f := newFake(t)
	metrics.BreakerState.WithLabelValues("openai", "gpt-test-breaker").Set(2)
	p, err := cloudwatch.New(cloudwatch.Options{
		Namespace: "TimeTravel/Test", Client: client(f, 3), Now: func() time.Time { return fixedNow },
		Gauges: cloudwatch.WorkerGauges(fakeInspector{"snapshot": 7, "aggregate": 0}),
	})
	if err != nil {
		t.Fatal(err)
	}
	observe(p)
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	reqs := f.got()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	if reqs[0].Namespace != "TimeTravel/Test" || !reqs[0].Signed {
		t.Errorf("namespace %q, signed %v", reqs[0].Namespace, reqs[0].Signed)
	}
	for _, d := range reqs[0].MetricData {
		if !d.Timestamp.Equal(fixedNow) {
			t.Errorf("%s: timestamp %v, want %v", d.MetricName, d.Timestamp, fixedNow)
		}
	}
	tests := []struct {
		name           string
		dims           map[string]string
		unit           string
		values, counts []float64
	}{
		{"JobDuration", map[string]string{"Status": "completed"}, "Seconds", []float64{1.5, 2.25}, []float64{1, 1}},
		{"JobDuration", map[string]string{"Status": "failed"}, "Seconds", []float64{30}, []float64{1}},
		{"JobFailures", nil, "Count", []float64{0, 1}, []float64{2, 1}},
		{"StageDuration", map[string]string{"Stage": "total"}, "Seconds", []float64{1.5, 2.25, 30}, []float64{1, 1, 1}},
		{"StageDuration", map[string]string{"Stage": "queue_wait"}, "Seconds", []float64{0.02}, []float64{2}},
		{"StageDuration", map[string]string{"Stage": "snapshot"}, "Seconds", []float64{1, 1.2}, []float64{2, 1}},
		{"StageDuration", map[string]string{"Stage": "snapshots"}, "Seconds", []float64{1.2}, []float64{1}},
		{"LLMCalls", map[string]string{"Provider": "openai", "Model": "gpt-4o", "Outcome": "ok"}, "Count", []float64{1}, []float64{2}},
		{"LLMCalls", map[string]string{"Provider": "openai", "Model": "gpt-4o", "Outcome": "rate_limited"}, "Count", []float64{1}, []float64{1}},
		{"LLMCalls", map[string]string{"Provider": "openai", "Model": "gpt-4o", "Outcome": "canceled"}, "Count", []float64{1}, []float64{1}},
		{"LLMCallDuration", map[string]string{"Provider": "openai", "Model": "gpt-4o", "Outcome": "ok"}, "Seconds", []float64{1.2}, []float64{2}},
		{"LLMErrors", map[string]string{"Provider": "openai", "Model": "gpt-4o"}, "Count", []float64{0, 1}, []float64{2, 1}},
		{"LLMErrors", nil, "Count", []float64{0, 1}, []float64{2, 1}},
		{"QueueDepth", map[string]string{"Queue": "snapshot"}, "Count", []float64{7}, []float64{1}},
		{"QueueDepth", map[string]string{"Queue": "aggregate"}, "Count", []float64{0}, []float64{1}},
		{"BreakerState", map[string]string{"Provider": "openai", "Model": "gpt-test-breaker"}, "None", []float64{2}, []float64{1}},
	}
	for _, tt := range tests {
		got := find(reqs, tt.name, tt.dims)
		if len(got) != 1 {
			t.Errorf("%s %v: %d datums, want 1", tt.name, tt.dims, len(got))
			continue
		}
		d := got[0]
		if d.Unit != tt.unit || !slices.Equal(d.Values, tt.values) || !slices.Equal(d.Counts, tt.counts) {
			t.Errorf("%s %v: unit %s values %v counts %v, want %s %v %v", tt.name, tt.dims, d.Unit, d.Values, d.Counts, tt.unit, tt.values, tt.counts)
		}
	}
	// Nothing is sent twice: the next flush has only the gauges.
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range f.got()[1].MetricData {
		if d.MetricName != "QueueDepth" && d.MetricName != "BreakerState" {
			t.Errorf("second flush sent %s again", d.MetricName)
		}
	}
}

// TestLimits checks that big flushes are split within PutMetricData's
// limits: at most 150 values per datum, 1000 datums per request, and
// that every observation arrives.
func TestLimits(t *testing.T) {
	tests := []struct {
		name             string
		series, distinct int
		wantRequests     int
	}{
		{"one series of 400 distinct values", 1, 400, 1},
		{"1200 series of one value", 1200, 1, 2},
		{"300 series of 300 distinct values (by size)", 300, 300, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			p, err := cloudwatch.New(cloudwatch.Options{Namespace: "TT", Client: client(f, 1)})
			if err != nil {
				t.Fatal(err)
			}
			for s := range tt.series {
				dims := []cloudwatch.Dim{{"Series", strings.Repeat("x", s%7) + string(rune('a'+s%26)) + time.Duration(s).String()}}
				for v := range tt.distinct {
					p.RecordN("M", cloudwatch.UnitCount, dims, float64(v+1), 2)
				}
			}
			if err := p.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			reqs := f.got()
			if len(reqs) != tt.wantRequests {
				t.Errorf("%d requests, want %d", len(reqs), tt.wantRequests)
			}
			var values, total float64
			for _, r := range reqs {
				if len(r.MetricData) > cloudwatch.MaxDatumsPerRequest || r.Bytes > 1<<20 {
					t.Errorf("request with %d datums, %d bytes", len(r.MetricData), r.Bytes)
				}
				for _, d := range r.MetricData {
					if len(d.Values) > cloudwatch.MaxValuesPerDatum || len(d.Values) != len(d.Counts) {
						t.Errorf("datum with %d values and %d counts", len(d.Values), len(d.Counts))
					}
					values += float64(len(d.Values))
					for _, c := range d.Counts {
						total += c
					}
				}
			}
			if want := float64(tt.series * tt.distinct); values != want || total != 2*want {
				t.Errorf("%v values, %v observations; want %v, %v", values, total, want, 2*want)
			}
		})
	}
}

// TestFailingEndpoint: a 500 is retried by the SDK, then logged (without
// the credentials) and counted; its observations are dropped; and a flush
// in progress never blocks the callers that record.
func TestFailingEndpoint(t *testing.T) {
	f := newFake(t)
	f.setStatus(http.StatusInternalServerError)
	var logs bytes.Buffer
	p, err := cloudwatch.New(cloudwatch.Options{
		Namespace: "TT", Client: client(f, 3),
		Log: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	before := failures(t, "api")
	observe(p)
	if err := p.Flush(context.Background()); err == nil {
		t.Fatal("flush succeeded against a failing endpoint")
	}
	if n := len(f.got()); n != 3 {
		t.Errorf("%d attempts, want 3 (the SDK's retries)", n)
	}
	if got := failures(t, "api") - before; got != 1 {
		t.Errorf("failures counted %v, want 1", got)
	}
	if !strings.Contains(logs.String(), "PutMetricData failed") {
		t.Errorf("no warning logged: %s", logs.String())
	}
	if strings.Contains(logs.String(), testSecret) || strings.Contains(logs.String(), testKeyID) {
		t.Errorf("credentials logged: %s", logs.String())
	}
	// Dropped: the next flush has nothing to send.
	f.setStatus(http.StatusOK)
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.got()); n != 3 {
		t.Errorf("%d requests after an empty flush, want 3", n)
	}

	// A flush held by a slow endpoint: recording goes on meanwhile.
	f.mu.Lock()
	f.arrived, f.release = make(chan struct{}), make(chan struct{})
	f.mu.Unlock()
	p.Record("M", cloudwatch.UnitCount, nil, 1)
	done := make(chan error, 1)
	go func() { done <- p.Flush(context.Background()) }()
	<-f.arrived
	observe(p) // would deadlock the test if recording waited for the flush
	close(f.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestPushTimeout: an endpoint that does not answer costs a flush the push
// timeout, not more.
func TestPushTimeout(t *testing.T) {
	f := newFake(t)
	f.mu.Lock()
	f.arrived, f.release = make(chan struct{}, 1), make(chan struct{})
	f.mu.Unlock()
	t.Cleanup(func() { close(f.release) })
	p, err := cloudwatch.New(cloudwatch.Options{Namespace: "TT", Client: client(f, 1), PushTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p.Record("M", cloudwatch.UnitCount, nil, 1)
	if err := p.Flush(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("flush: %v, want a deadline exceeded", err)
	}
}

// failures reads PublishFailures of output (prometheus/testutil would need
// a module go.mod does not list).
func failures(t *testing.T, output string) float64 {
	t.Helper()
	var m dto.Metric
	if err := cloudwatch.PublishFailures.WithLabelValues(output).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
