package redisproc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// eventually calls f until it returns nil or d passes; it fails the test
// with f's last error then. Each call may take up to d: a client that is
// still finding its way after a failover is not cut short.
func eventually(t *testing.T, d time.Duration, what string, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	if err := pollEach(ctx, what, d, f); err != nil {
		t.Fatal(err)
	}
}

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts SentinelOptions
	}{
		{"plain", SentinelOptions{}},
		{"passwords", SentinelOptions{MasterName: "tt", Password: "data-secret", SentinelPassword: "sentinel-secret"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tc.opts
			opts.Dir = t.TempDir()
			noProcsAfter(t, opts.Dir)
			start := time.Now()
			g, err := StartSentinel(t.Context(), opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(g.Close)
			if p := procsUnder(t, opts.Dir); len(p) != 5 {
				t.Fatalf("%d processes under the group's directory, want 5: %q", len(p), p)
			}
			t.Logf("group ready in %v", time.Since(start).Round(time.Millisecond))
			if len(g.SentinelAddrs) != 3 {
				t.Fatalf("sentinels %v, want 3", g.SentinelAddrs)
			}
			if got, err := g.MasterAddr(t.Context()); err != nil || got != g.Master().Addr {
				t.Fatalf("MasterAddr = %q, %v; want %s", got, err, g.Master().Addr)
			}

			c := redis.NewFailoverClient(&redis.FailoverOptions{
				MasterName:       g.MasterName,
				SentinelAddrs:    g.SentinelAddrs,
				Password:         g.Password,
				SentinelPassword: g.SentinelPassword,
				DialTimeout:      time.Second,
				ReadTimeout:      time.Second,
				WriteTimeout:     time.Second,
			})
			t.Cleanup(func() { _ = c.Close() })
			ctx := t.Context()
			if err := c.Set(ctx, "k", "v1", 0).Err(); err != nil {
				t.Fatalf("SET before failover: %v", err)
			}
			if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v1" {
				t.Fatalf("GET = %q, %v; want v1", got, err)
			}

			g.Master().Kill()
			killed := time.Now()
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			addr, err := g.WaitFailover(fctx)
			if err != nil {
				t.Fatal(err)
			}
			if addr != g.Replica().Addr {
				t.Errorf("new master %s, want the replica %s", addr, g.Replica().Addr)
			}
			t.Logf("failover in %v", time.Since(killed).Round(time.Millisecond))
			// The same client finds the new master by itself.
			eventually(t, 15*time.Second-time.Since(killed), "write after failover", func(ctx context.Context) error {
				return c.Set(ctx, "k", "v2", 0).Err()
			})
			t.Logf("client writes again %v after the kill", time.Since(killed).Round(time.Millisecond))
			if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v2" {
				t.Errorf("GET after failover = %q, %v; want v2", got, err)
			}
			// A second WaitFailover waits for another failover: none comes.
			short, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel2()
			if _, err := g.WaitFailover(short); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("WaitFailover without a failover: %v, want deadline exceeded", err)
			}
		})
	}
}
