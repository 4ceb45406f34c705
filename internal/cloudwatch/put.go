package cloudwatch

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cw "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
)

// Limits of PutMetricData.
const (
	// MaxDatumsPerRequest is the most MetricDatum one request may hold.
	MaxDatumsPerRequest = 1000
	// MaxValuesPerDatum is the most entries of a MetricDatum's Values (and
	// Counts).
	MaxValuesPerDatum = 150
	// MaxDimensions is the most dimensions of a metric.
	MaxDimensions = 30
	// maxRequestBytes keeps a request well under the API's 1 MB payload:
	// estimated with estimateBytes.
	maxRequestBytes = 512 << 10
)

// estimateBytes is an upper bound of the encoded size of a datum (CBOR:
// a value and a count are 9 bytes each; names, dimensions and fixed
// fields fit in the rest).
func estimateBytes(s *series, values int) int {
	n := 128 + len(s.name)
	for _, d := range s.dims {
		n += 32 + len(d.Name) + len(d.Value)
	}
	return n + 20*values
}

// putInputs splits the series into PutMetricData requests: a series with
// more than MaxValuesPerDatum distinct values becomes several datums of
// the same metric (CloudWatch aggregates them), and requests hold at most
// MaxDatumsPerRequest datums and about maxRequestBytes.
func putInputs(namespace string, all []*series, at time.Time) []*cw.PutMetricDataInput {
	var out []*cw.PutMetricDataInput
	var cur *cw.PutMetricDataInput
	size := 0
	for _, s := range all {
		values, counts := s.sortedValues()
		dims := make([]types.Dimension, 0, min(len(s.dims), MaxDimensions))
		for _, d := range s.dims[:min(len(s.dims), MaxDimensions)] {
			dims = append(dims, types.Dimension{Name: aws.String(d.Name), Value: aws.String(d.Value)})
		}
		for i := 0; i < len(values); i += MaxValuesPerDatum {
			j := min(i+MaxValuesPerDatum, len(values))
			b := estimateBytes(s, j-i)
			if cur == nil || len(cur.MetricData) == MaxDatumsPerRequest || size+b > maxRequestBytes {
				cur = &cw.PutMetricDataInput{Namespace: aws.String(namespace)}
				out = append(out, cur)
				size = 0
			}
			size += b
			cur.MetricData = append(cur.MetricData, types.MetricDatum{
				MetricName: aws.String(s.name),
				Dimensions: dims,
				Unit:       types.StandardUnit(s.unit),
				Timestamp:  aws.Time(at),
				Values:     values[i:j],
				Counts:     counts[i:j],
			})
		}
	}
	return out
}
