package cloudwatch

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// MaxEMFValues is the most values one metric may have in one EMF line.
const MaxEMFValues = 100

// emfRoot is the _aws member of an EMF line (the Embedded Metric Format
// specification's metadata).
type emfRoot struct {
	Timestamp         int64          `json:"Timestamp"`
	CloudWatchMetrics []emfDirective `json:"CloudWatchMetrics"`
}

type emfDirective struct {
	Namespace string `json:"Namespace"`
	// Dimensions holds one dimension set: the names of the line's
	// dimensions (top-level members); an empty set for metrics without
	// dimensions.
	Dimensions [][]string  `json:"Dimensions"`
	Metrics    []emfMetric `json:"Metrics"`
}

type emfMetric struct {
	Name string `json:"Name"`
	Unit string `json:"Unit,omitempty"`
}

// writeEMF writes the series as EMF lines: the series that share their
// dimension values go in the same lines (an EMF line holds one value per
// dimension name), each metric's observations as an array of values (a
// value seen n times appears n times), at most MaxEMFValues per metric
// and line, so that a series may take several lines.
func writeEMF(w io.Writer, namespace string, all []*series, at time.Time) error {
	type group struct {
		dims   []Dim
		series []*series
	}
	var groups []*group
	byDims := map[string]*group{}
	for _, s := range all {
		k := dimsKey(s.dims)
		g := byDims[k]
		if g == nil {
			g = &group{dims: s.dims}
			byDims[k] = g
			groups = append(groups, g)
		}
		g.series = append(g.series, s)
	}
	ts := at.UnixMilli()
	for _, g := range groups {
		// Each metric's observations, expanded.
		expanded := make([][]float64, len(g.series))
		lines := 0
		for i, s := range g.series {
			values, counts := s.sortedValues()
			for j, v := range values {
				for range int(counts[j]) {
					expanded[i] = append(expanded[i], v)
				}
			}
			lines = max(lines, (len(expanded[i])+MaxEMFValues-1)/MaxEMFValues)
		}
		names := make([]string, 0, min(len(g.dims), MaxDimensions))
		for _, d := range g.dims[:min(len(g.dims), MaxDimensions)] {
			names = append(names, d.Name)
		}
		for l := range lines {
			line := map[string]any{}
			dir := emfDirective{Namespace: namespace, Dimensions: [][]string{names}}
			for i, s := range g.series {
				lo := l * MaxEMFValues
				if lo >= len(expanded[i]) {
					continue
				}
				hi := min(lo+MaxEMFValues, len(expanded[i]))
				dir.Metrics = append(dir.Metrics, emfMetric{Name: s.name, Unit: s.unit})
				line[s.name] = expanded[i][lo:hi]
			}
			for _, d := range g.dims[:len(names)] {
				line[d.Name] = d.Value
			}
			line["_aws"] = emfRoot{Timestamp: ts, CloudWatchMetrics: []emfDirective{dir}}
			b, err := json.Marshal(line)
			if err != nil {
				return fmt.Errorf("cloudwatch: encode an EMF line: %w", err)
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return fmt.Errorf("cloudwatch: write an EMF line: %w", err)
			}
		}
	}
	return nil
}
