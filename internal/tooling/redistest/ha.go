package redistest

import (
	"testing"

	"github.com/timetravel-ai/timetravel/internal/tooling/redisproc"
)

// Sentinel starts a Redis Sentinel group of t's own (a master, a replica
// and three sentinels on free loopback ports; see redisproc.StartSentinel)
// and stops it, with its files, at the end of the test, failed or not.
// Options are optional; at most one is used, and its Dir is ignored.
func Sentinel(t testing.TB, o ...redisproc.SentinelOptions) *redisproc.SentinelGroup {
	t.Helper()
	var opts redisproc.SentinelOptions
	if len(o) > 0 {
		opts = o[0]
	}
	opts.Dir = t.TempDir()
	g, err := redisproc.StartSentinel(t.Context(), opts)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(g.Close)
	return g
}

// Cluster starts a Redis Cluster of t's own (three masters with one
// replica each on free loopback ports; see redisproc.StartCluster) and
// stops it, with its files, at the end of the test, failed or not.
// Options are optional; at most one is used, and its Dir is ignored.
func Cluster(t testing.TB, o ...redisproc.ClusterOptions) *redisproc.Cluster {
	t.Helper()
	var opts redisproc.ClusterOptions
	if len(o) > 0 {
		opts = o[0]
	}
	opts.Dir = t.TempDir()
	c, err := redisproc.StartCluster(t.Context(), opts)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}
