package redisx

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewClient connects to url (REDIS_URL) with a pool of at least poolSize
// connections, named name in Redis' CLIENT LIST. It does not dial until
// first use. The caller closes it.
//
// The pool is fixed-size when fixed is set: it opens all its connections
// at start and keeps them, so that the number of connections a process holds
// does not move with its load.
//
// Its connectivity errors are marked (Hook), so that a Redis outage is
// never taken for a failure of the work that met it.
func NewClient(url, name string, poolSize int, fixed bool) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	opt.PoolSize = max(opt.PoolSize, poolSize)
	if opt.ClientName == "" {
		opt.ClientName = name
	}
	if fixed {
		opt.MinIdleConns = opt.PoolSize
		opt.MaxIdleConns = opt.PoolSize
		opt.ConnMaxIdleTime = -1 // keep them
		opt.PoolTimeout = 30 * time.Second
	}
	rdb := redis.NewClient(opt)
	rdb.AddHook(Hook{})
	return rdb, nil
}
