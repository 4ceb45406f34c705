package cloudwatch_test

import (
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/timetravel-ai/timetravel/internal/cloudwatch"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/metrics"
)

// TestStartFromEnvironment builds the Publisher as the worker does, from
// the configuration and the SDK's default chain (the region, static
// credentials and AWS_ENDPOINT_URL_CLOUDWATCH from the environment), feeds
// it through package metrics, and stops it: the stop flushes what was
// observed, and nothing of the Publisher keeps running.
func TestStartFromEnvironment(t *testing.T) {
	f := newFake(t)
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_CLOUDWATCH": f.srv.URL, "AWS_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": testKeyID, "AWS_SECRET_ACCESS_KEY": testSecret, "AWS_SESSION_TOKEN": "",
		"AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none, "AWS_PROFILE": "",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": "", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "",
	} {
		t.Setenv(k, v)
	}
	ignore := goleak.IgnoreCurrent()
	cfg, err := config.LoadFrom(map[string]string{"CLOUDWATCH_NAMESPACE": "TimeTravel/Env", "CLOUDWATCH_INTERVAL": "1h"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := cloudwatch.FromConfig(t.Context(), cfg.CloudWatch, cloudwatch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := p.Start()
	metrics.ObserveJob("completed", map[string]int64{"total": 4000}, "snapshot", []int64{3000})
	metrics.ObserveLLMRequest(metrics.LLMRequest{Provider: "p", Model: "m", Outcome: metrics.OutcomeOK, Duration: time.Second})
	stop()
	// After the stop, nothing is received any more.
	metrics.ObserveJob("completed", map[string]int64{"total": 9000}, "snapshot", nil)

	reqs := f.got()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1 (the stop's flush)", len(reqs))
	}
	if reqs[0].Namespace != "TimeTravel/Env" || !reqs[0].Signed {
		t.Errorf("namespace %q, signed %v", reqs[0].Namespace, reqs[0].Signed)
	}
	for _, c := range []struct {
		name string
		dims map[string]string
		v    float64
	}{
		{"JobDuration", map[string]string{"Status": "completed"}, 4},
		{"StageDuration", map[string]string{"Stage": "snapshot"}, 3},
		{"LLMCallDuration", map[string]string{"Provider": "p", "Model": "m", "Outcome": "ok"}, 1},
	} {
		d := find(reqs, c.name, c.dims)
		if len(d) != 1 || len(d[0].Values) != 1 || d[0].Values[0] != c.v {
			t.Errorf("%s %v: %+v, want the one value %v", c.name, c.dims, d, c.v)
		}
	}
	f.srv.Close()
	goleak.VerifyNone(t, ignore)
}

// TestFromConfigNeedsRegion: without a region the Publisher is refused at
// start, not at its first push.
func TestFromConfigNeedsRegion(t *testing.T) {
	none := filepath.Join(t.TempDir(), "none")
	for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", none)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", none)
	if _, err := cloudwatch.FromConfig(t.Context(), config.CloudWatch{Namespace: "TT", Interval: time.Minute}, cloudwatch.Options{}); err == nil {
		t.Error("no error without a region")
	}
}
