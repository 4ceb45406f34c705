package bench

import (
	"encoding/json"
	"io"
	"math"
	"slices"
	"time"
)

// Summary is the distribution of a set of durations.
type Summary struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	Max float64 `json:"max_ms"`
	Min float64 `json:"min_ms"`
}

// Summarize returns the nearest-rank percentiles of ds, in milliseconds.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	slices.Sort(ms)
	return Summary{N: len(ms), P50: rank(ms, 0.50), P95: rank(ms, 0.95), Max: ms[len(ms)-1], Min: ms[0]}
}

// rank is the nearest-rank percentile of sorted values.
func rank(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
