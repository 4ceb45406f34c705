package cloudwatch_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/timetravel-ai/timetravel/internal/cloudwatch"
)

// knownMetrics are the names the Publisher sends.
var knownMetrics = []string{
	cloudwatch.MetricJobDuration, cloudwatch.MetricStageDuration, cloudwatch.MetricJobFailures,
	cloudwatch.MetricLLMCalls, cloudwatch.MetricLLMCallDuration, cloudwatch.MetricLLMErrors,
	cloudwatch.MetricQueueDepth, cloudwatch.MetricBreakerState,
}

const deployDir = "../../k8s/aws-cloudwatch"

// TestDashboardAndAlarms reads the CloudFormation template and the
// dashboard body: the template's dashboard is dashboard.json, every metric
// they name is one the Publisher sends, and the alarms have the issue's
// thresholds.
func TestDashboardAndAlarms(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(deployDir, "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dashboard map[string]any
	if err := json.Unmarshal(raw, &dashboard); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	tmplRaw, err := os.ReadFile(filepath.Join(deployDir, "cloudwatch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var tmpl struct {
		Resources map[string]struct {
			Type       string         `yaml:"Type"`
			Properties map[string]any `yaml:"Properties"`
		} `yaml:"Resources"`
	}
	if err := yaml.Unmarshal(tmplRaw, &tmpl); err != nil {
		t.Fatalf("cloudwatch.yaml: %v", err)
	}
	body, _ := tmpl.Resources["Dashboard"].Properties["DashboardBody"].(map[string]any)["Fn::Sub"].(string)
	var embedded map[string]any
	if err := json.Unmarshal([]byte(body), &embedded); err != nil {
		t.Fatalf("the template's dashboard body: %v", err)
	}
	if !reflect.DeepEqual(embedded, dashboard) {
		t.Error("the template's dashboard body differs from dashboard.json: copy dashboard.json into it")
	}

	// Every metric the dashboard names.
	searchName := regexp.MustCompile(`MetricName="([^"]+)"`)
	widgets, _ := dashboard["widgets"].([]any)
	named := 0
	for _, w := range widgets {
		props, _ := w.(map[string]any)["properties"].(map[string]any)
		metricsList, _ := props["metrics"].([]any)
		for _, m := range metricsList {
			row, _ := m.([]any)
			var names []string
			if len(row) > 1 {
				if s, ok := row[1].(string); ok {
					names = append(names, s)
				}
			}
			if len(row) > 0 {
				if e, ok := row[0].(map[string]any); ok {
					for _, sm := range searchName.FindAllStringSubmatch(e["expression"].(string), -1) {
						names = append(names, sm[1])
					}
				}
			}
			for _, n := range names {
				named++
				if !slices.Contains(knownMetrics, n) {
					t.Errorf("dashboard names metric %q, which is not sent", n)
				}
			}
		}
	}
	if named < 9 {
		t.Errorf("dashboard names %d metrics, want them all", named)
	}

	tests := []struct {
		alarm, stage string
		threshold    float64
	}{
		{"TotalP95Warning", "total", 45},
		{"TotalP95Critical", "total", 90},
		{"SnapshotP95Warning", "snapshot", 30},
	}
	for _, tt := range tests {
		r, ok := tmpl.Resources[tt.alarm]
		if !ok || r.Type != "AWS::CloudWatch::Alarm" {
			t.Errorf("%s: no alarm", tt.alarm)
			continue
		}
		p := r.Properties
		dims, _ := p["Dimensions"].([]any)
		stage := ""
		if len(dims) == 1 {
			stage, _ = dims[0].(map[string]any)["Value"].(string)
		}
		if p["MetricName"] != cloudwatch.MetricStageDuration || p["ExtendedStatistic"] != "p95" || stage != tt.stage || toFloat(p["Threshold"]) != tt.threshold {
			t.Errorf("%s: %v %v stage %q threshold %v; want StageDuration p95 stage %q above %v",
				tt.alarm, p["MetricName"], p["ExtendedStatistic"], stage, p["Threshold"], tt.stage, tt.threshold)
		}
	}
	for _, name := range []string{"LLMErrorRatio", "JobFailureRatio"} {
		queries, _ := tmpl.Resources[name].Properties["Metrics"].([]any)
		if len(queries) != 3 {
			t.Errorf("%s: %d metric queries, want 3", name, len(queries))
		}
		for _, q := range queries {
			ms, ok := q.(map[string]any)["MetricStat"].(map[string]any)
			if !ok {
				continue
			}
			n, _ := ms["Metric"].(map[string]any)["MetricName"].(string)
			if !slices.Contains(knownMetrics, n) {
				t.Errorf("%s: metric %q is not sent", name, n)
			}
		}
	}
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int:
		return float64(x)
	case float64:
		return x
	}
	return -1
}
