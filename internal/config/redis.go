package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/caarlos0/env/v11"
	"github.com/redis/go-redis/v9"
)

// DefaultRedisURL is the single server the service uses when no Redis
// topology is configured.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// RedisTopology names how the service reaches Redis.
type RedisTopology string

// The Redis topologies; exactly one is configured.
const (
	// RedisSingle is one server named by REDIS_URL (the default).
	RedisSingle RedisTopology = "single"
	// RedisSentinel is a master found through Redis Sentinel
	// (REDIS_SENTINEL_MASTER, REDIS_SENTINEL_ADDRS).
	RedisSentinel RedisTopology = "sentinel"
	// RedisCluster is a Redis Cluster found through seed nodes
	// (REDIS_CLUSTER_ADDRS).
	RedisCluster RedisTopology = "cluster"
)

// Redis is where queues, jobs and event streams live: one server
// (REDIS_URL), a Sentinel-managed master, or a Redis Cluster. The server's
// credentials and TLS come from REDIS_URL for a single server
// (redis://user:password@host:port/db, rediss:// for TLS), and from
// REDIS_USERNAME, REDIS_PASSWORD and REDIS_TLS for Sentinel and Cluster,
// which have several addresses and so no one URL. REDIS_TLS_CA_FILE and
// REDIS_TLS_SERVER_NAME refine TLS for every topology. Validate refuses a
// variable that does not apply to the configured topology, so that no
// setting is silently ignored.
type Redis struct {
	// URL names the single server:
	// redis[s]://[[user]:password@]host:port/db. Empty when Sentinel or
	// Cluster is configured; DefaultRedisURL when nothing is.
	URL string `env:"REDIS_URL"`

	// SentinelMaster is the master's name in Sentinel; SentinelAddrs are
	// the sentinels (host:port, comma-separated).
	SentinelMaster string   `env:"REDIS_SENTINEL_MASTER"`
	SentinelAddrs  []string `env:"REDIS_SENTINEL_ADDRS" envSeparator:","`
	// SentinelUsername and SentinelPassword authenticate with the
	// sentinels (their requirepass or ACL user), which may differ from the
	// data servers'. SentinelPassword is never logged.
	SentinelUsername string `env:"REDIS_SENTINEL_USERNAME"`
	SentinelPassword string `env:"REDIS_SENTINEL_PASSWORD"`

	// ClusterAddrs are seed nodes of the cluster (host:port,
	// comma-separated); the others are discovered.
	ClusterAddrs []string `env:"REDIS_CLUSTER_ADDRS" envSeparator:","`

	// ServerUsername (an ACL user) and ServerPassword authenticate with
	// the data servers of Sentinel and Cluster. ServerPassword is never
	// logged. (Field names are unique in Config: see nameVariables.)
	ServerUsername string `env:"REDIS_USERNAME"`
	ServerPassword string `env:"REDIS_PASSWORD"`
	// DB is the database of a Sentinel-managed master (a cluster has only
	// database 0; a single server's is in REDIS_URL).
	DB int `env:"REDIS_DB" envDefault:"0"`
	// TLS turns TLS on for Sentinel and Cluster (sentinels and servers).
	TLS bool `env:"REDIS_TLS" envDefault:"false"`
	// TLSCAFile is a PEM file of the CAs that may sign the servers'
	// certificates; empty means the system's roots.
	TLSCAFile string `env:"REDIS_TLS_CA_FILE"`
	// TLSServerName is the name the servers' certificates must carry;
	// empty means each address's host.
	TLSServerName string `env:"REDIS_TLS_SERVER_NAME"`
}

// Topology returns the configured topology. It is meaningful once
// Validate accepted the configuration (which refuses more than one).
func (r Redis) Topology() RedisTopology {
	switch {
	case len(r.ClusterAddrs) > 0:
		return RedisCluster
	case r.SentinelMaster != "" || len(r.SentinelAddrs) > 0:
		return RedisSentinel
	default:
		return RedisSingle
	}
}

// TLSEnabled reports whether the connections use TLS: rediss:// for a
// single server, REDIS_TLS otherwise.
func (r Redis) TLSEnabled() bool {
	if r.Topology() == RedisSingle {
		u, err := url.Parse(r.URL)
		return err == nil && u.Scheme == "rediss"
	}
	return r.TLS
}

// Addrs returns the addresses the configuration names: the single
// server's, the sentinels', or the cluster's seeds.
func (r Redis) Addrs() []string {
	switch r.Topology() {
	case RedisCluster:
		return r.ClusterAddrs
	case RedisSentinel:
		return r.SentinelAddrs
	}
	if opt, err := redis.ParseURL(r.URL); err == nil {
		return []string{opt.Addr}
	}
	return nil
}

// resolve trims the address lists and fills the default single server when
// no topology is named.
func (r *Redis) resolve() {
	trim := func(addrs []string) []string {
		for i, a := range addrs {
			addrs[i] = strings.TrimSpace(a)
		}
		return addrs
	}
	r.SentinelAddrs = trim(r.SentinelAddrs)
	r.ClusterAddrs = trim(r.ClusterAddrs)
	r.SentinelMaster = strings.TrimSpace(r.SentinelMaster)
	if r.URL == "" && r.SentinelMaster == "" && len(r.SentinelAddrs) == 0 && len(r.ClusterAddrs) == 0 {
		r.URL = DefaultRedisURL
	}
}

// validate reports the Redis settings that cannot work, each naming its
// variable.
func (r Redis) validate() []error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", name, fmt.Sprintf(format, args...)))
	}
	var named []string
	if r.URL != "" {
		named = append(named, "REDIS_URL")
	}
	if r.SentinelMaster != "" || len(r.SentinelAddrs) > 0 {
		named = append(named, "REDIS_SENTINEL_MASTER/REDIS_SENTINEL_ADDRS")
	}
	if len(r.ClusterAddrs) > 0 {
		named = append(named, "REDIS_CLUSTER_ADDRS")
	}
	if len(named) > 1 {
		bad(strings.Split(named[1], "/")[0], "configure one Redis topology: REDIS_URL (a single server), REDIS_SENTINEL_MASTER and REDIS_SENTINEL_ADDRS (Sentinel) or REDIS_CLUSTER_ADDRS (Cluster); got %s", strings.Join(named, " and "))
		return errs
	}
	topo := r.Topology()
	// notFor refuses a variable that is set but means nothing for the
	// topology, rather than ignoring it.
	notFor := func(name string, set bool, why string) {
		if set {
			bad(name, "%s", why)
		}
	}
	switch topo {
	case RedisSingle:
		u, err := redis.ParseURL(r.URL)
		if err != nil {
			bad("REDIS_URL", "%v (want redis://[[user]:password@]host:port/db, rediss:// for TLS)", err)
		}
		// Deployments often hold the server's password in REDIS_PASSWORD
		// next to REDIS_URL (for the Redis server itself, or an autoscaler):
		// the URL decides, and these may only agree with it.
		if err == nil {
			urlTLS := u.TLSConfig != nil
			const inURL = "a single server takes it from REDIS_URL (redis://user:password@host:port/db, rediss:// for TLS), which says otherwise"
			notFor("REDIS_USERNAME", r.ServerUsername != "" && r.ServerUsername != u.Username, inURL)
			notFor("REDIS_PASSWORD", r.ServerPassword != "" && r.ServerPassword != u.Password, inURL)
			notFor("REDIS_TLS", r.TLS && !urlTLS, inURL)
			notFor("REDIS_DB", r.DB != 0 && r.DB != u.DB, inURL)
			notFor("REDIS_TLS_CA_FILE", r.TLSCAFile != "" && !urlTLS, "TLS is off: REDIS_URL must be rediss://")
			notFor("REDIS_TLS_SERVER_NAME", r.TLSServerName != "" && !urlTLS, "TLS is off: REDIS_URL must be rediss://")
		}
		notFor("REDIS_SENTINEL_USERNAME", r.SentinelUsername != "", "is for Sentinel, which is not configured (REDIS_SENTINEL_MASTER, REDIS_SENTINEL_ADDRS)")
		notFor("REDIS_SENTINEL_PASSWORD", r.SentinelPassword != "", "is for Sentinel, which is not configured (REDIS_SENTINEL_MASTER, REDIS_SENTINEL_ADDRS)")
	case RedisSentinel:
		if r.SentinelMaster == "" {
			bad("REDIS_SENTINEL_MASTER", "must name the master (as in the sentinels' configuration) when REDIS_SENTINEL_ADDRS is set")
		}
		if len(r.SentinelAddrs) == 0 {
			bad("REDIS_SENTINEL_ADDRS", "must list at least one sentinel (host:port, comma-separated) when REDIS_SENTINEL_MASTER is set")
		}
		errs = append(errs, checkAddrs("REDIS_SENTINEL_ADDRS", r.SentinelAddrs)...)
		if r.SentinelUsername != "" && r.SentinelPassword == "" {
			bad("REDIS_SENTINEL_USERNAME", "an ACL user needs REDIS_SENTINEL_PASSWORD")
		}
		if r.DB < 0 {
			bad("REDIS_DB", "must not be negative, got %d", r.DB)
		}
	case RedisCluster:
		errs = append(errs, checkAddrs("REDIS_CLUSTER_ADDRS", r.ClusterAddrs)...)
		notFor("REDIS_DB", r.DB != 0, "a Redis Cluster has only database 0")
		notFor("REDIS_SENTINEL_USERNAME", r.SentinelUsername != "", "is for Sentinel, not Cluster (REDIS_CLUSTER_ADDRS)")
		notFor("REDIS_SENTINEL_PASSWORD", r.SentinelPassword != "", "is for Sentinel, not Cluster (REDIS_CLUSTER_ADDRS)")
	}
	if topo != RedisSingle {
		if r.ServerUsername != "" && r.ServerPassword == "" {
			bad("REDIS_USERNAME", "an ACL user needs REDIS_PASSWORD")
		}
		notFor("REDIS_TLS_CA_FILE", r.TLSCAFile != "" && !r.TLS, "TLS is off: set REDIS_TLS=true")
		notFor("REDIS_TLS_SERVER_NAME", r.TLSServerName != "" && !r.TLS, "TLS is off: set REDIS_TLS=true")
	}
	if r.TLSCAFile != "" {
		if err := checkCAFile(r.TLSCAFile); err != nil {
			bad("REDIS_TLS_CA_FILE", "%v", err)
		}
	}
	return errs
}

// checkAddrs reports the entries of a host:port list that are not one.
func checkAddrs(name string, addrs []string) []error {
	var errs []error
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("config: %s: %q is not host:port: %w", name, a, err))
			continue
		}
		if n, err := strconv.ParseUint(port, 10, 16); host == "" || err != nil || n == 0 {
			errs = append(errs, fmt.Errorf("config: %s: %q is not host:port (a host and a port from 1 to 65535)", name, a))
		}
	}
	return errs
}

// checkCAFile reports whether path is a readable PEM file with at least one
// certificate.
func checkCAFile(path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return errors.New("no PEM certificate in " + path)
	}
	return nil
}

// masked returns r with its passwords replaced by a mask, for logging.
func (r Redis) masked() Redis {
	if r.ServerPassword != "" {
		r.ServerPassword = "****"
	}
	if r.SentinelPassword != "" {
		r.SentinelPassword = "****"
	}
	if u, err := url.Parse(r.URL); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "****")
			// String escapes '*' in user info (%2A); show the mask as is.
			r.URL = strings.Replace(u.String(), ":%2A%2A%2A%2A@", ":****@", 1)
		}
	}
	return r
}

// LoadRedis parses and validates only the Redis settings, from getenv:
// for tools that reach the service's Redis (ttctl keys) without being the
// service. Its errors name the variable, as Load's do.
func LoadRedis(getenv func(string) string) (Redis, error) {
	params, err := env.GetFieldParams(&Redis{})
	if err != nil {
		return Redis{}, fmt.Errorf("config: %w", err)
	}
	environ := map[string]string{}
	for _, p := range params {
		if v := getenv(p.Key); v != "" {
			environ[p.Key] = v
		}
	}
	var holder struct{ Redis Redis }
	if err := env.ParseWithOptions(&holder, env.Options{Environment: environ}); err != nil {
		return Redis{}, fmt.Errorf("config: %w", nameVariables(err))
	}
	r := holder.Redis
	r.resolve()
	if err := errors.Join(r.validate()...); err != nil {
		return Redis{}, err
	}
	return r, nil
}
