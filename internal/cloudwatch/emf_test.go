package cloudwatch_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/cloudwatch"
)

// emfUnits are the units the EMF specification allows.
var emfUnits = []string{"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
	"Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
	"Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
	"Gigabits/Second", "Terabits/Second", "Count/Second", "None"}

// validateEMF checks one line against the required fields of the
// Embedded Metric Format specification: a root object with _aws holding
// Timestamp (epoch milliseconds) and CloudWatchMetrics (directives of a
// Namespace, Dimensions: arrays of at most 30 dimension names, each a
// top-level string member; Metrics: at most 100, each a Name, 1-255
// characters, and an optional Unit of the allowed ones, whose values are
// top-level members: a number or an array of at most 100 numbers). It
// returns the line's metrics: name to values.
func validateEMF(line []byte) (map[string][]float64, map[string]string, error) {
	var root map[string]json.RawMessage
	if err := json.Unmarshal(line, &root); err != nil {
		return nil, nil, fmt.Errorf("not a JSON object: %w", err)
	}
	var meta struct {
		Timestamp         *int64 `json:"Timestamp"`
		CloudWatchMetrics []struct {
			Namespace  *string    `json:"Namespace"`
			Dimensions [][]string `json:"Dimensions"`
			Metrics    []struct {
				Name *string `json:"Name"`
				Unit *string `json:"Unit"`
			} `json:"Metrics"`
		} `json:"CloudWatchMetrics"`
	}
	raw, ok := root["_aws"]
	if !ok {
		return nil, nil, errors.New("no _aws member")
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return nil, nil, fmt.Errorf("_aws: %w", err)
	}
	if meta.Timestamp == nil || *meta.Timestamp <= 0 {
		return nil, nil, errors.New("_aws.Timestamp missing or not epoch milliseconds")
	}
	if meta.CloudWatchMetrics == nil {
		return nil, nil, errors.New("_aws.CloudWatchMetrics missing")
	}
	values := map[string][]float64{}
	dims := map[string]string{}
	for _, d := range meta.CloudWatchMetrics {
		if d.Namespace == nil || len(*d.Namespace) < 1 || len(*d.Namespace) > 255 {
			return nil, nil, errors.New("Namespace missing or out of bounds")
		}
		if d.Dimensions == nil {
			return nil, nil, errors.New("Dimensions missing")
		}
		for _, set := range d.Dimensions {
			if len(set) > 30 {
				return nil, nil, fmt.Errorf("dimension set of %d names", len(set))
			}
			for _, n := range set {
				var v string
				if err := json.Unmarshal(root[n], &v); err != nil {
					return nil, nil, fmt.Errorf("dimension %s: not a top-level string member", n)
				}
				dims[n] = v
			}
		}
		if d.Metrics == nil || len(d.Metrics) > 100 {
			return nil, nil, errors.New("Metrics missing or over 100")
		}
		for _, m := range d.Metrics {
			if m.Name == nil || len(*m.Name) < 1 || len(*m.Name) > 255 {
				return nil, nil, errors.New("metric Name missing or out of bounds")
			}
			if m.Unit != nil && !slices.Contains(emfUnits, *m.Unit) {
				return nil, nil, fmt.Errorf("metric %s: unit %q", *m.Name, *m.Unit)
			}
			member, ok := root[*m.Name]
			if !ok {
				return nil, nil, fmt.Errorf("metric %s: no top-level member", *m.Name)
			}
			var one float64
			var many []float64
			if err := json.Unmarshal(member, &one); err == nil {
				many = []float64{one}
			} else if err := json.Unmarshal(member, &many); err != nil {
				return nil, nil, fmt.Errorf("metric %s: not a number or an array of numbers", *m.Name)
			}
			if len(many) > 100 {
				return nil, nil, fmt.Errorf("metric %s: %d values", *m.Name, len(many))
			}
			values[*m.Name] = append(values[*m.Name], many...)
		}
	}
	return values, dims, nil
}

// TestEMF writes the observations of a few jobs as EMF lines, validates
// each against the specification and finds every observation.
func TestEMF(t *testing.T) {
	var out bytes.Buffer
	p, err := cloudwatch.New(cloudwatch.Options{
		Namespace: "TimeTravel/Test", EMF: &out, Now: func() time.Time { return fixedNow },
		Gauges: cloudwatch.WorkerGauges(fakeInspector{"snapshot": 7}),
	})
	if err != nil {
		t.Fatal(err)
	}
	observe(p)
	// Over the 100 values of one line.
	for i := range 130 {
		p.Record("Many", cloudwatch.UnitSeconds, []cloudwatch.Dim{{"Stage", "many"}}, float64(i))
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// key: metric name and its dimensions; value: all values seen.
	got := map[string][]float64{}
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	lines := 0
	for sc.Scan() {
		lines++
		vals, dims, err := validateEMF(sc.Bytes())
		if err != nil {
			t.Fatalf("line %d: %v\n%s", lines, err, sc.Bytes())
		}
		var ts struct {
			AWS struct{ Timestamp int64 } `json:"_aws"`
		}
		_ = json.Unmarshal(sc.Bytes(), &ts)
		if ts.AWS.Timestamp != fixedNow.UnixMilli() {
			t.Errorf("timestamp %d, want %d", ts.AWS.Timestamp, fixedNow.UnixMilli())
		}
		for n, v := range vals {
			k := fmt.Sprint(n, dims)
			got[k] = append(got[k], v...)
		}
	}
	tests := []struct {
		key  string
		want []float64
	}{
		{fmt.Sprint("JobDuration", map[string]string{"Status": "completed"}), []float64{1.5, 2.25}},
		{fmt.Sprint("JobFailures", map[string]string{}), []float64{0, 0, 1}},
		{fmt.Sprint("StageDuration", map[string]string{"Stage": "snapshot"}), []float64{1, 1, 1.2}},
		{fmt.Sprint("LLMCalls", map[string]string{"Provider": "openai", "Model": "gpt-4o", "Outcome": "ok"}), []float64{1, 1}},
		{fmt.Sprint("LLMErrors", map[string]string{"Provider": "openai", "Model": "gpt-4o"}), []float64{0, 0, 1}},
		{fmt.Sprint("LLMErrors", map[string]string{}), []float64{0, 0, 1}},
		{fmt.Sprint("QueueDepth", map[string]string{"Queue": "snapshot"}), []float64{7}},
	}
	for _, tt := range tests {
		if !slices.Equal(got[tt.key], tt.want) {
			t.Errorf("%s: %v, want %v", tt.key, got[tt.key], tt.want)
		}
	}
	if n := len(got[fmt.Sprint("Many", map[string]string{"Stage": "many"})]); n != 130 {
		t.Errorf("Many: %d values, want 130 (over two lines)", n)
	}
}

// TestEMFValidatorRejects makes sure the validator catches lines that miss
// the specification's required fields.
func TestEMFValidatorRejects(t *testing.T) {
	tests := []struct{ name, line string }{
		{"no _aws", `{"M":1}`},
		{"no timestamp", `{"_aws":{"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[[]],"Metrics":[{"Name":"M"}]}]},"M":1}`},
		{"no namespace", `{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Dimensions":[[]],"Metrics":[{"Name":"M"}]}]},"M":1}`},
		{"no dimensions", `{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Metrics":[{"Name":"M"}]}]},"M":1}`},
		{"dimension not a member", `{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["D"]],"Metrics":[{"Name":"M"}]}]},"M":1}`},
		{"metric not a member", `{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[[]],"Metrics":[{"Name":"M"}]}]}}`},
		{"bad unit", `{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[[]],"Metrics":[{"Name":"M","Unit":"Furlongs"}]}]},"M":1}`},
	}
	for _, tt := range tests {
		if _, _, err := validateEMF([]byte(tt.line)); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}
