package service_test

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"

	"github.com/aws/smithy-go/encoding/cbor"
	"go.uber.org/goleak"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// TestWorkerPushesToCloudWatch runs the api and a worker configured with
// CLOUDWATCH_NAMESPACE, the SDK's default chain aimed (through
// AWS_ENDPOINT_URL_CLOUDWATCH) at a stand-in for CloudWatch; runs one job;
// stops both; and finds the job's metrics in the PutMetricData requests
// of the worker's last flush, with no goroutine left running.
func TestWorkerPushesToCloudWatch(t *testing.T) {
	db := redistest.New(t)
	sim := httptest.NewServer(llmsim.New(llmsim.Config{}))
	t.Cleanup(sim.Close)
	var mu sync.Mutex
	// metric name, then its first dimension's value: the observations.
	got := map[string]map[string]float64{}
	var namespaces []string
	cw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				t.Error(err)
				return
			}
			body = zr
		}
		raw, _ := io.ReadAll(body)
		v, err := cbor.Decode(raw)
		if err != nil {
			t.Errorf("decode PutMetricData: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		m := v.(cbor.Map)
		mu.Lock()
		defer mu.Unlock()
		namespaces = append(namespaces, string(m["Namespace"].(cbor.String)))
		for _, d := range m["MetricData"].(cbor.List) {
			dm := d.(cbor.Map)
			name := string(dm["MetricName"].(cbor.String))
			first := ""
			if dims, ok := dm["Dimensions"].(cbor.List); ok && len(dims) > 0 {
				first = string(dims[0].(cbor.Map)["Value"].(cbor.String))
			}
			if got[name] == nil {
				got[name] = map[string]float64{}
			}
			for _, c := range dm["Counts"].(cbor.List) {
				n, _ := cbor.AsFloat64(c)
				got[name][first] += n
			}
		}
		w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
	}))
	t.Cleanup(cw.Close)
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_CLOUDWATCH": cw.URL, "AWS_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": "AKIDEXAMPLETESTKEY01", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_SESSION_TOKEN": "",
		"AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none, "AWS_PROFILE": "", "AWS_EC2_METADATA_DISABLED": "true",
	} {
		t.Setenv(k, v)
	}
	ignore := goleak.IgnoreCurrent()

	cfg, err := config.LoadFrom(map[string]string{
		"REDIS_URL": db.URL, "API_ADDR": "127.0.0.1:0", "WORKER_ADDR": "127.0.0.1:0",
		"OPENAI_BASE_URL": sim.URL + "/v1", "OPENAI_API_KEY": "sim-key",
		"LLM_MODEL": "sim-model", "LLM_EXTRACTION_MODEL": "sim-extract", "SHUTDOWN_TIMEOUT": "5s",
		// An hour: the only push is the one of the stop.
		"CLOUDWATCH_NAMESPACE": "TimeTravel/InProcess", "CLOUDWATCH_INTERVAL": "1h",
	})
	if err != nil {
		t.Fatal(err)
	}
	p := startInProcess(t, cfg)

	if _, status := runJob(t, p.base, ""); status != "completed" {
		t.Errorf("job ended %q, want completed", status)
	}
	p.stop(t)

	mu.Lock()
	defer mu.Unlock()
	if len(namespaces) != 1 || namespaces[0] != "TimeTravel/InProcess" {
		t.Errorf("requests' namespaces %q, want one TimeTravel/InProcess", namespaces)
	}
	tests := []struct {
		metric, dim string
		want        float64
	}{
		{"JobDuration", "completed", 1},
		{"StageDuration", "total", 1},
		{"StageDuration", "snapshot", 2}, // two time points
		{"JobFailures", "", 1},
		{"LLMCalls", "default", 3}, // two snapshots, key changes, narrative: at least 3
		{"QueueDepth", "snapshot", 1},
	}
	for _, tt := range tests {
		if n := got[tt.metric][tt.dim]; n < tt.want {
			t.Errorf("%s %q: %v observations, want at least %v (got %v)", tt.metric, tt.dim, n, tt.want, got)
		}
	}
	cw.Close()
	sim.Close()
	goleak.VerifyNone(t, ignore)
}
