package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/tooling/testcert"
)

// group returns the slog group key of a logged config.
func group(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	g, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("logged config has no group %s: %v", key, m)
	}
	return g
}

func TestLoadRedisTopologies(t *testing.T) {
	t.Parallel()
	ca := testcert.WriteCA(t)
	tests := []struct {
		name  string
		env   map[string]string
		topo  RedisTopology
		want  Redis
		addrs []string
		tls   bool
	}{
		{"default", map[string]string{}, RedisSingle,
			Redis{URL: DefaultRedisURL}, []string{"127.0.0.1:6379"}, false},
		{"empty variables mean unset", map[string]string{"REDIS_URL": "", "REDIS_SENTINEL_ADDRS": "", "REDIS_CLUSTER_ADDRS": "", "REDIS_SENTINEL_MASTER": ""}, RedisSingle,
			Redis{URL: DefaultRedisURL}, []string{"127.0.0.1:6379"}, false},
		{"single with ACL and TLS", map[string]string{"REDIS_URL": "rediss://app:pw@cache:6380/3", "REDIS_TLS_CA_FILE": ca, "REDIS_TLS_SERVER_NAME": "cache.internal"}, RedisSingle,
			Redis{URL: "rediss://app:pw@cache:6380/3", TLSCAFile: ca, TLSServerName: "cache.internal"}, []string{"cache:6380"}, true},
		{"single with the URL's credentials and TLS repeated", map[string]string{"REDIS_URL": "rediss://app:pw@cache:6380/3", "REDIS_USERNAME": "app", "REDIS_PASSWORD": "pw", "REDIS_TLS": "true", "REDIS_DB": "3"}, RedisSingle,
			Redis{URL: "rediss://app:pw@cache:6380/3", ServerUsername: "app", ServerPassword: "pw", TLS: true, DB: 3}, []string{"cache:6380"}, true},
		{"sentinel", map[string]string{"REDIS_SENTINEL_MASTER": "mymaster", "REDIS_SENTINEL_ADDRS": "s1:26379, s2:26379,[::1]:26380"}, RedisSentinel,
			Redis{SentinelMaster: "mymaster", SentinelAddrs: []string{"s1:26379", "s2:26379", "[::1]:26380"}}, []string{"s1:26379", "s2:26379", "[::1]:26380"}, false},
		{"sentinel with every option", map[string]string{"REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_ADDRS": "s1:26379",
			"REDIS_SENTINEL_USERNAME": "sentuser", "REDIS_SENTINEL_PASSWORD": "sentpw", "REDIS_USERNAME": "app", "REDIS_PASSWORD": "pw",
			"REDIS_DB": "2", "REDIS_TLS": "true", "REDIS_TLS_CA_FILE": ca, "REDIS_TLS_SERVER_NAME": "redis.internal"}, RedisSentinel,
			Redis{SentinelMaster: "m", SentinelAddrs: []string{"s1:26379"}, SentinelUsername: "sentuser", SentinelPassword: "sentpw",
				ServerUsername: "app", ServerPassword: "pw", DB: 2, TLS: true, TLSCAFile: ca, TLSServerName: "redis.internal"}, []string{"s1:26379"}, true},
		{"cluster", map[string]string{"REDIS_CLUSTER_ADDRS": "n1:7000,n2:7001", "REDIS_PASSWORD": "pw", "REDIS_TLS": "true"}, RedisCluster,
			Redis{ClusterAddrs: []string{"n1:7000", "n2:7001"}, ServerPassword: "pw", TLS: true}, []string{"n1:7000", "n2:7001"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := LoadFrom(tt.env)
			if err != nil {
				t.Fatalf("LoadFrom: %v", err)
			}
			r := c.Redis
			// The tools' LoadRedis reads the same settings.
			if alone, err := LoadRedis(func(k string) string { return tt.env[k] }); err != nil {
				t.Errorf("LoadRedis: %v", err)
			} else if fmt.Sprintf("%+v", alone) != fmt.Sprintf("%+v", r) {
				t.Errorf("LoadRedis = %+v, LoadFrom's Redis = %+v", alone, r)
			}
			if r.Topology() != tt.topo {
				t.Errorf("Topology() = %s, want %s", r.Topology(), tt.topo)
			}
			if r.URL != tt.want.URL || r.SentinelMaster != tt.want.SentinelMaster || !slices.Equal(r.SentinelAddrs, tt.want.SentinelAddrs) ||
				r.SentinelUsername != tt.want.SentinelUsername || r.SentinelPassword != tt.want.SentinelPassword ||
				!slices.Equal(r.ClusterAddrs, tt.want.ClusterAddrs) || r.ServerUsername != tt.want.ServerUsername ||
				r.ServerPassword != tt.want.ServerPassword || r.DB != tt.want.DB || r.TLS != tt.want.TLS ||
				r.TLSCAFile != tt.want.TLSCAFile || r.TLSServerName != tt.want.TLSServerName {
				t.Errorf("Redis = %+v, want %+v", r, tt.want)
			}
			if !slices.Equal(r.Addrs(), tt.addrs) {
				t.Errorf("Addrs() = %v, want %v", r.Addrs(), tt.addrs)
			}
			if r.TLSEnabled() != tt.tls {
				t.Errorf("TLSEnabled() = %v, want %v", r.TLSEnabled(), tt.tls)
			}
		})
	}
}

func TestLoadRedisInvalid(t *testing.T) {
	t.Parallel()
	ca := testcert.WriteCA(t)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	sentinel := func(extra map[string]string) map[string]string {
		m := map[string]string{"REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_ADDRS": "s1:26379"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name string
		env  map[string]string
		// variable is named at the start of an error; detail is in it too.
		variable, detail string
	}{
		{"two topologies", map[string]string{"REDIS_URL": "redis://a:6379/0", "REDIS_CLUSTER_ADDRS": "n1:7000"}, "REDIS_CLUSTER_ADDRS", "REDIS_URL and REDIS_CLUSTER_ADDRS"},
		{"url and sentinel", sentinel(map[string]string{"REDIS_URL": "redis://a:6379/0"}), "REDIS_SENTINEL_MASTER", "one Redis topology"},
		{"sentinel and cluster", sentinel(map[string]string{"REDIS_CLUSTER_ADDRS": "n1:7000"}), "REDIS_CLUSTER_ADDRS", "one Redis topology"},
		{"sentinel without master", map[string]string{"REDIS_SENTINEL_ADDRS": "s1:26379"}, "REDIS_SENTINEL_MASTER", "name the master"},
		{"sentinel without addrs", map[string]string{"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_ADDRS", "at least one sentinel"},
		{"sentinel addr without port", sentinel(map[string]string{"REDIS_SENTINEL_ADDRS": "s1:26379,s2"}), "REDIS_SENTINEL_ADDRS", `"s2" is not host:port`},
		{"sentinel addr empty entry", sentinel(map[string]string{"REDIS_SENTINEL_ADDRS": "s1:26379,,s2:26379"}), "REDIS_SENTINEL_ADDRS", `"" is not host:port`},
		{"sentinel addr bad port", sentinel(map[string]string{"REDIS_SENTINEL_ADDRS": "s1:99999"}), "REDIS_SENTINEL_ADDRS", `"s1:99999"`},
		{"sentinel addr without host", sentinel(map[string]string{"REDIS_SENTINEL_ADDRS": ":26379"}), "REDIS_SENTINEL_ADDRS", `":26379"`},
		{"sentinel user without password", sentinel(map[string]string{"REDIS_SENTINEL_USERNAME": "u"}), "REDIS_SENTINEL_USERNAME", "REDIS_SENTINEL_PASSWORD"},
		{"server user without password", sentinel(map[string]string{"REDIS_USERNAME": "u"}), "REDIS_USERNAME", "REDIS_PASSWORD"},
		{"negative db", sentinel(map[string]string{"REDIS_DB": "-1"}), "REDIS_DB", "-1"},
		{"db not a number", sentinel(map[string]string{"REDIS_DB": "two"}), "REDIS_DB", `"two"`},
		{"tls not a bool", sentinel(map[string]string{"REDIS_TLS": "maybe"}), "REDIS_TLS", `"maybe"`},
		{"ca file without tls", sentinel(map[string]string{"REDIS_TLS_CA_FILE": ca}), "REDIS_TLS_CA_FILE", "REDIS_TLS=true"},
		{"server name without tls", map[string]string{"REDIS_CLUSTER_ADDRS": "n1:7000", "REDIS_TLS_SERVER_NAME": "x"}, "REDIS_TLS_SERVER_NAME", "REDIS_TLS=true"},
		{"ca file missing", sentinel(map[string]string{"REDIS_TLS": "true", "REDIS_TLS_CA_FILE": filepath.Join(t.TempDir(), "none.pem")}), "REDIS_TLS_CA_FILE", "none.pem"},
		{"ca file not PEM", sentinel(map[string]string{"REDIS_TLS": "true", "REDIS_TLS_CA_FILE": notPEM}), "REDIS_TLS_CA_FILE", "no PEM certificate"},
		{"cluster addr bad", map[string]string{"REDIS_CLUSTER_ADDRS": "n1:7000,n2:port"}, "REDIS_CLUSTER_ADDRS", `"n2:port"`},
		{"cluster db", map[string]string{"REDIS_CLUSTER_ADDRS": "n1:7000", "REDIS_DB": "1"}, "REDIS_DB", "only database 0"},
		{"cluster sentinel password", map[string]string{"REDIS_CLUSTER_ADDRS": "n1:7000", "REDIS_SENTINEL_PASSWORD": "x"}, "REDIS_SENTINEL_PASSWORD", "not Cluster"},
		{"single with REDIS_PASSWORD", map[string]string{"REDIS_PASSWORD": "x"}, "REDIS_PASSWORD", "takes it from REDIS_URL"},
		{"single with another REDIS_PASSWORD", map[string]string{"REDIS_URL": "redis://:a@h:6379/0", "REDIS_PASSWORD": "b"}, "REDIS_PASSWORD", "takes it from REDIS_URL"},
		{"single with REDIS_USERNAME", map[string]string{"REDIS_URL": "redis://a:6379/0", "REDIS_USERNAME": "u"}, "REDIS_USERNAME", "takes it from REDIS_URL"},
		{"single with REDIS_TLS", map[string]string{"REDIS_TLS": "true"}, "REDIS_TLS", "rediss://"},
		{"single with REDIS_DB", map[string]string{"REDIS_DB": "1"}, "REDIS_DB", "REDIS_URL"},
		{"single with sentinel password", map[string]string{"REDIS_SENTINEL_PASSWORD": "x"}, "REDIS_SENTINEL_PASSWORD", "not configured"},
		{"single without TLS with a CA", map[string]string{"REDIS_URL": "redis://a:6379/0", "REDIS_TLS_CA_FILE": ca}, "REDIS_TLS_CA_FILE", "rediss://"},
		{"single bad url", map[string]string{"REDIS_URL": "http://a:6379"}, "REDIS_URL", "scheme"},
		{"single TLS with a bad CA", map[string]string{"REDIS_URL": "rediss://a:6379/0", "REDIS_TLS_CA_FILE": notPEM}, "REDIS_TLS_CA_FILE", "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The service and the tools (LoadRedis) refuse it alike.
			_, err := LoadFrom(tt.env)
			_, rerr := LoadRedis(func(k string) string { return tt.env[k] })
			for name, err := range map[string]error{"LoadFrom": err, "LoadRedis": rerr} {
				if err == nil {
					t.Fatalf("%s(%v) accepted it", name, tt.env)
				}
				if msg := err.Error(); !strings.Contains(msg, "config: "+tt.variable+": ") || !strings.Contains(msg, tt.detail) {
					t.Errorf("%s: error %q does not name %s with %q", name, msg, tt.variable, tt.detail)
				}
			}
		})
	}
}

func TestLogValueMasksRedisCredentials(t *testing.T) {
	t.Parallel()
	c, err := LoadFrom(map[string]string{"REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_ADDRS": "s1:26379",
		"REDIS_SENTINEL_USERNAME": "sentuser", "REDIS_SENTINEL_PASSWORD": "hunter2sentinel", "REDIS_USERNAME": "app", "REDIS_PASSWORD": "hunter2server"})
	if err != nil {
		t.Fatal(err)
	}
	out, m := logged(t, c)
	if strings.Contains(out, "hunter2") {
		t.Errorf("a Redis password in the log: %s", out)
	}
	g := group(t, m, "Redis")
	for k, want := range map[string]any{"REDIS_SENTINEL_PASSWORD": "****", "REDIS_PASSWORD": "****",
		"REDIS_SENTINEL_USERNAME": "sentuser", "REDIS_USERNAME": "app", "REDIS_SENTINEL_MASTER": "m"} {
		if g[k] != want {
			t.Errorf("%s logged as %v, want %v", k, g[k], want)
		}
	}
	if c.Redis.ServerPassword != "hunter2server" || c.Redis.SentinelPassword != "hunter2sentinel" {
		t.Errorf("LogValue changed the config: %+v", c.Redis)
	}
}
