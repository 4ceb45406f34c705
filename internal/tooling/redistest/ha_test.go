package redistest

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestSentinelAndCluster(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		client func(t *testing.T) redis.UniversalClient
	}{
		{"sentinel", func(t *testing.T) redis.UniversalClient {
			g := Sentinel(t)
			return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: g.MasterName, SentinelAddrs: g.SentinelAddrs})
		}},
		{"cluster", func(t *testing.T) redis.UniversalClient {
			c := Cluster(t)
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.client(t)
			t.Cleanup(func() { _ = c.Close() })
			ctx := t.Context()
			if err := c.Set(ctx, "k", "v", time.Minute).Err(); err != nil {
				t.Fatalf("SET: %v", err)
			}
			if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
				t.Errorf("GET = %q, %v; want v", got, err)
			}
		})
	}
}
