package redisx

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/tooling/testcert"
)

// clientOpts are the options of a client NewClient built, whatever its
// type, as far as go-redis shows them.
type clientOpts struct {
	cluster        bool
	addr           string // of a *redis.Client: "FailoverClient" for Sentinel
	addrs          []string
	name           string
	username, pass string
	db             int
	pool, minIdle  int
	tls            *tls.Config
}

func optsOf(t *testing.T, rdb redis.UniversalClient) clientOpts {
	t.Helper()
	switch c := rdb.(type) {
	case *redis.Client:
		o := c.Options()
		return clientOpts{addr: o.Addr, name: o.ClientName, username: o.Username, pass: o.Password, db: o.DB,
			pool: o.PoolSize, minIdle: o.MinIdleConns, tls: o.TLSConfig}
	case *redis.ClusterClient:
		o := c.Options()
		if o.ClusterStateReloadInterval != time.Second {
			t.Errorf("cluster slot map reloaded every %s, want 1s (a dead master's slots would fail for a minute)", o.ClusterStateReloadInterval)
		}
		return clientOpts{cluster: true, addrs: o.Addrs, name: o.ClientName, username: o.Username, pass: o.Password,
			pool: o.PoolSize, minIdle: o.MinIdleConns, tls: o.TLSConfig}
	}
	t.Fatalf("NewClient returned a %T", rdb)
	return clientOpts{}
}

func TestNewClientTopologies(t *testing.T) {
	t.Parallel()
	ca := testcert.WriteCA(t)
	// A fixed pool dials at once: let those dials be refused, not looked up.
	dead := closedAddr(t)
	tests := []struct {
		name  string
		r     config.Redis
		pool  int
		fixed bool
		want  clientOpts
		// serverName is the TLS server name, when TLS is on; rootCAs
		// whether the CA file replaced the system's roots.
		serverName string
		rootCAs    bool
	}{
		{name: "single", r: config.Redis{URL: "redis://app:pw@cache:6380/3"}, pool: 8,
			want: clientOpts{addr: "cache:6380", name: "tt-test", username: "app", pass: "pw", db: 3, pool: 8}},
		{name: "single fixed keeps the URL's larger pool and name", r: config.Redis{URL: "redis://cache:6379/0?pool_size=40&client_name=mine"}, pool: 8, fixed: true,
			want: clientOpts{addr: "cache:6379", name: "mine", pool: 40, minIdle: 40}},
		{name: "single TLS", r: config.Redis{URL: "rediss://:pw@cache:6380/0"}, pool: 4,
			want: clientOpts{addr: "cache:6380", name: "tt-test", pass: "pw", pool: 4}, serverName: "cache"},
		{name: "single TLS with CA and server name", r: config.Redis{URL: "rediss://cache:6380/0", TLSCAFile: ca, TLSServerName: "redis.internal"}, pool: 4,
			want: clientOpts{addr: "cache:6380", name: "tt-test", pool: 4}, serverName: "redis.internal", rootCAs: true},
		{name: "sentinel", r: config.Redis{SentinelMaster: "m", SentinelAddrs: []string{dead}, SentinelPassword: "sp",
			ServerUsername: "app", ServerPassword: "pw", DB: 2}, pool: 16, fixed: true,
			want: clientOpts{addr: "FailoverClient", name: "tt-test", username: "app", pass: "pw", db: 2, pool: 16, minIdle: 16}},
		{name: "sentinel TLS", r: config.Redis{SentinelMaster: "m", SentinelAddrs: []string{"s1:26379"}, TLS: true, TLSCAFile: ca}, pool: 4,
			want: clientOpts{addr: "FailoverClient", name: "tt-test", pool: 4}, rootCAs: true},
		{name: "cluster", r: config.Redis{ClusterAddrs: []string{dead, "n2:7001"}, ServerUsername: "app", ServerPassword: "pw"}, pool: 12, fixed: true,
			want: clientOpts{cluster: true, addrs: []string{dead, "n2:7001"}, name: "tt-test", username: "app", pass: "pw", pool: 12, minIdle: 12}},
		{name: "cluster TLS", r: config.Redis{ClusterAddrs: []string{"n1:7000"}, TLS: true, TLSServerName: "redis.internal"}, pool: 4,
			want: clientOpts{cluster: true, addrs: []string{"n1:7000"}, name: "tt-test", pool: 4}, serverName: "redis.internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rdb, err := NewClient(tt.r, "tt-test", tt.pool, tt.fixed)
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			got := optsOf(t, rdb)
			tlsOn := got.tls != nil
			if wantTLS := tt.r.TLSEnabled(); tlsOn != wantTLS {
				t.Fatalf("TLS on = %v, want %v", tlsOn, wantTLS)
			}
			if tlsOn {
				if got.tls.ServerName != tt.serverName || (got.tls.RootCAs != nil) != tt.rootCAs || got.tls.MinVersion != tls.VersionTLS12 {
					t.Errorf("TLS server name %q, own roots %v, min version %x; want %q, %v, TLS 1.2",
						got.tls.ServerName, got.tls.RootCAs != nil, got.tls.MinVersion, tt.serverName, tt.rootCAs)
				}
			}
			got.tls = nil
			if got.cluster != tt.want.cluster || got.addr != tt.want.addr || !slices.Equal(got.addrs, tt.want.addrs) ||
				got.name != tt.want.name || got.username != tt.want.username || got.pass != tt.want.pass || got.db != tt.want.db ||
				got.pool != tt.want.pool || got.minIdle != tt.want.minIdle {
				t.Errorf("options %+v, want %+v", got, tt.want)
			}
		})
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Every topology's client has the Hook: a Redis out of reach is
// Unavailable, however the client met it.
func TestNewClientMarksUnavailable(t *testing.T) {
	t.Parallel()
	addr := closedAddr(t)
	for _, r := range []config.Redis{
		{URL: "redis://" + addr + "/0"},
		{SentinelMaster: "m", SentinelAddrs: []string{addr}},
		{ClusterAddrs: []string{addr}},
	} {
		t.Run(string(r.Topology()), func(t *testing.T) {
			t.Parallel()
			rdb, err := NewClient(r, "tt-test", 2, false)
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			// Generous: the Sentinel client retries its dials for ~10 s first.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err = rdb.Set(ctx, "k", "v", 0).Err()
			if err == nil || !Unavailable(err) {
				t.Fatalf("SET with Redis out of reach: %v, want an Unavailable error", err)
			}
		})
	}
}

func TestNewClientErrors(t *testing.T) {
	t.Parallel()
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		r    config.Redis
		want string
	}{
		{"bad url", config.Redis{URL: "http://x"}, "REDIS_URL: "},
		{"CA without TLS", config.Redis{URL: "redis://x:6379/0", TLSCAFile: notPEM}, "REDIS_TLS_CA_FILE"},
		{"CA not PEM", config.Redis{ClusterAddrs: []string{"n:1"}, TLS: true, TLSCAFile: notPEM}, "REDIS_TLS_CA_FILE: no PEM"},
		{"CA missing", config.Redis{ClusterAddrs: []string{"n:1"}, TLS: true, TLSCAFile: notPEM + ".gone"}, "REDIS_TLS_CA_FILE: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rdb, err := NewClient(tt.r, "tt-test", 1, false)
			if err == nil {
				rdb.Close()
				t.Fatal("NewClient accepted it")
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error %q, want it to start with %q", err, tt.want)
			}
		})
	}
}
