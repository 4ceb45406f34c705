package api

import (
	"crypto/tls"
	"reflect"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/config"
)

// The admin UI connects to the configured topology with its credentials
// and TLS.
func TestAdminConnOpt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    config.Redis
		want asynq.RedisConnOpt
		// serverName is the TLS server name; "" for TLS off.
		serverName string
	}{
		{"single", config.Redis{URL: "redis://cache:6379/2"},
			asynq.RedisClientOpt{Network: "tcp", Addr: "cache:6379", DB: 2}, ""},
		{"single keeps the ACL user", config.Redis{URL: "rediss://app:pw@cache:6380/0"},
			asynq.RedisClientOpt{Network: "tcp", Addr: "cache:6380", Username: "app", Password: "pw"}, "cache"},
		{"sentinel", config.Redis{SentinelMaster: "m", SentinelAddrs: []string{"s1:26379", "s2:26379"}, SentinelUsername: "su", SentinelPassword: "sp",
			ServerUsername: "app", ServerPassword: "pw", DB: 1, TLS: true, TLSServerName: "redis.internal"},
			asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s1:26379", "s2:26379"}, SentinelUsername: "su", SentinelPassword: "sp",
				Username: "app", Password: "pw", DB: 1}, "redis.internal"},
		{"cluster", config.Redis{ClusterAddrs: []string{"n1:7000"}, ServerUsername: "app", ServerPassword: "pw"},
			asynq.RedisClusterClientOpt{Addrs: []string{"n1:7000"}, Username: "app", Password: "pw"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := adminConnOpt(tt.r)
			if err != nil {
				t.Fatal(err)
			}
			var tc *tls.Config
			switch g := got.(type) {
			case asynq.RedisClientOpt:
				tc, g.TLSConfig = g.TLSConfig, nil
				got = g
			case asynq.RedisFailoverClientOpt:
				tc, g.TLSConfig = g.TLSConfig, nil
				got = g
			case asynq.RedisClusterClientOpt:
				tc, g.TLSConfig = g.TLSConfig, nil
				got = g
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %T %+v, want %T %+v", got, got, tt.want, tt.want)
			}
			if (tc != nil) != (tt.serverName != "") || (tc != nil && tc.ServerName != tt.serverName) {
				t.Errorf("TLS %+v, want server name %q", tc, tt.serverName)
			}
		})
	}
}
