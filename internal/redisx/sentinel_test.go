package redisx

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/tooling/redisproc"
)

// A client built from the Sentinel variables finds the master through
// real sentinels, with passwords on both the sentinels and the servers,
// and writes to it.
func TestNewClientSentinel(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	g, err := redisproc.StartSentinel(ctx, redisproc.SentinelOptions{Password: "server-pw", SentinelPassword: "sentinel-pw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	cfg, err := config.LoadFrom(map[string]string{
		"REDIS_SENTINEL_MASTER":   g.MasterName,
		"REDIS_SENTINEL_ADDRS":    strings.Join(g.SentinelAddrs, ","),
		"REDIS_SENTINEL_PASSWORD": g.SentinelPassword,
		"REDIS_PASSWORD":          g.Password,
	})
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := NewClient(cfg.Redis, "tt-test", 4, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want v", got, err)
	}
	// The write went to the master the sentinels name, under our name.
	direct := redis.NewClient(&redis.Options{Addr: g.Master().Addr, Password: g.Password})
	defer direct.Close()
	if got, err := direct.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET on the master %s = %q, %v; want v", g.Master().Addr, got, err)
	}
	list, err := direct.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list, "name=tt-test") {
		t.Errorf("CLIENT LIST on the master has no tt-test client:\n%s", list)
	}
}
