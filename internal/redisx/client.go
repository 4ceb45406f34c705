package redisx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/config"
)

// clusterReload is how often a cluster client reloads its slot map.
const clusterReload = time.Second

// NewClient returns a client of the configured Redis topology (see
// config.Redis): a *redis.Client for a single server (REDIS_URL), a
// *redis.Client that follows the master Sentinel names
// (redis.NewFailoverClient), or a *redis.ClusterClient. It has a pool of at
// least poolSize connections (per node, for a cluster), is named name in
// Redis' CLIENT LIST, and uses the configured credentials and TLS
// (TLSConfig). It does not dial until first use. The caller closes it.
//
// The pool is fixed-size when fixed is set: it opens all its connections
// at start and keeps them, so that the number of connections a process holds
// does not move with its load.
//
// Its connectivity errors are marked (Hook), so that a Redis outage is
// never taken for a failure of the work that met it.
//
// The errors name the variable at fault; config.Validate has already
// refused most of them.
func NewClient(r config.Redis, name string, poolSize int, fixed bool) (redis.UniversalClient, error) {
	tlsConf, err := TLSConfig(r)
	if err != nil {
		return nil, err
	}
	var rdb redis.UniversalClient
	switch r.Topology() {
	case config.RedisSentinel:
		opt := &redis.FailoverOptions{
			MasterName:       r.SentinelMaster,
			SentinelAddrs:    r.SentinelAddrs,
			SentinelUsername: r.SentinelUsername,
			SentinelPassword: r.SentinelPassword,
			Username:         r.ServerUsername,
			Password:         r.ServerPassword,
			DB:               r.DB,
			ClientName:       name,
			PoolSize:         poolSize,
			TLSConfig:        tlsConf,
		}
		if fixed {
			opt.MinIdleConns, opt.MaxIdleConns, opt.ConnMaxIdleTime, opt.PoolTimeout = fixedPool(opt.PoolSize)
		}
		rdb = redis.NewFailoverClient(opt)
	case config.RedisCluster:
		opt := &redis.ClusterOptions{
			Addrs:      r.ClusterAddrs,
			Username:   r.ServerUsername,
			Password:   r.ServerPassword,
			ClientName: name,
			PoolSize:   poolSize,
			TLSConfig:  tlsConf,
			// go-redis reloads its slot map on MOVED or every 60 s by
			// default, and a dead master answers neither: without a short
			// reload, writes to its slots fail for up to a minute after a
			// replica took over (measured: still failing 16 s after the
			// kill; with 1 s, writing again within 4 s).
			ClusterStateReloadInterval: clusterReload,
		}
		if fixed {
			opt.MinIdleConns, opt.MaxIdleConns, opt.ConnMaxIdleTime, opt.PoolTimeout = fixedPool(opt.PoolSize)
		}
		rdb = redis.NewClusterClient(opt)
	default:
		opt, err := redis.ParseURL(r.URL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		opt.PoolSize = max(opt.PoolSize, poolSize)
		if opt.ClientName == "" {
			opt.ClientName = name
		}
		if fixed {
			opt.MinIdleConns, opt.MaxIdleConns, opt.ConnMaxIdleTime, opt.PoolTimeout = fixedPool(opt.PoolSize)
		}
		// The URL's own, refined by REDIS_TLS_CA_FILE and
		// REDIS_TLS_SERVER_NAME when set.
		opt.TLSConfig = tlsConf
		rdb = redis.NewClient(opt)
	}
	rdb.AddHook(Hook{})
	return rdb, nil
}

// fixedPool returns the settings that make a pool of size connections
// fixed: MinIdleConns, MaxIdleConns, ConnMaxIdleTime and PoolTimeout.
func fixedPool(size int) (minIdle, maxIdle int, maxIdleTime, poolTimeout time.Duration) {
	return size, size, -1 /* keep them */, 30 * time.Second
}

// TLSConfig returns the TLS configuration of the connections to the
// configured Redis, or nil when TLS is off. For a single server it is the
// one rediss:// implies (the URL's host as the server name, TLS 1.2 at
// least, skip_verify from the URL's query), for Sentinel and Cluster
// (REDIS_TLS) TLS 1.2 at least with each address's host as the server
// name; REDIS_TLS_SERVER_NAME replaces the server name, REDIS_TLS_CA_FILE
// the system's roots. Each call returns a new value.
func TLSConfig(r config.Redis) (*tls.Config, error) {
	var c *tls.Config
	if r.Topology() == config.RedisSingle {
		opt, err := redis.ParseURL(r.URL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		c = opt.TLSConfig
	} else if r.TLS {
		c = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if c == nil {
		if r.TLSCAFile != "" || r.TLSServerName != "" {
			return nil, errors.New("REDIS_TLS_CA_FILE, REDIS_TLS_SERVER_NAME: TLS is off (REDIS_TLS, or rediss:// in REDIS_URL)")
		}
		return nil, nil
	}
	if r.TLSServerName != "" {
		c.ServerName = r.TLSServerName
	}
	if r.TLSCAFile != "" {
		pem, err := os.ReadFile(r.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("REDIS_TLS_CA_FILE: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("REDIS_TLS_CA_FILE: no PEM certificate in %s", r.TLSCAFile)
		}
	}
	return c, nil
}
