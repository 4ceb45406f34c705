package cloudwatch

import (
	"math"
	"slices"
	"strconv"
	"strings"
)

// Units of the metrics, as CloudWatch names them.
const (
	UnitSeconds = "Seconds"
	UnitCount   = "Count"
	UnitNone    = "None"
)

// Dim is one dimension of a metric: a name and its value.
type Dim struct{ Name, Value string }

// Gauge is one reading of a value taken at flush time (a queue's depth, a
// breaker's state), sent as one observation of its metric.
type Gauge struct {
	Name, Unit string
	Dims       []Dim
	Value      float64
}

// series is the observations of one metric with one set of dimension
// values since the last flush: how many times each value was seen.
type series struct {
	name, unit string
	dims       []Dim
	counts     map[float64]float64
}

// seriesKey identifies a metric with its dimension values.
func seriesKey(name string, dims []Dim) string {
	var b strings.Builder
	b.WriteString(name)
	for _, d := range dims {
		b.WriteByte(0)
		b.WriteString(d.Name)
		b.WriteByte(0)
		b.WriteString(d.Value)
	}
	return b.String()
}

// dimsKey identifies a set of dimension values, whatever the metric.
func dimsKey(dims []Dim) string { return seriesKey("", dims) }

// quantize rounds v to three significant digits, so that the distinct
// values of a series stay few (a few thousand at most over the range of
// durations) and memory stays bounded between flushes, for a relative
// error under 0.5 %. It returns false for the values CloudWatch refuses
// (NaN, infinities).
func quantize(v float64) (float64, bool) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	if v == 0 {
		return 0, true
	}
	q, err := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 3, 64), 64)
	if err != nil {
		return 0, false
	}
	return q, true
}

// sortedValues returns the distinct values of s in ascending order, and
// their counts.
func (s *series) sortedValues() (values, counts []float64) {
	values = make([]float64, 0, len(s.counts))
	for v := range s.counts {
		values = append(values, v)
	}
	slices.Sort(values)
	counts = make([]float64, len(values))
	for i, v := range values {
		counts[i] = s.counts[v]
	}
	return values, counts
}
