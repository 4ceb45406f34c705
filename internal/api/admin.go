package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/redisx"
)

// AdminRoot is where the queue admin UI (asynqmon) is mounted.
const AdminRoot = "/admin/queues"

// newAdminUI returns asynqmon on the api's Redis, in the configured
// topology (config.Redis), read-only unless ADMIN_READ_WRITE is set.
// asynqmon serves under its RootPath: the prefix is not stripped.
func newAdminUI(cfg config.Config) (*asynqmon.HTTPHandler, error) {
	opt, err := adminConnOpt(cfg.Redis)
	if err != nil {
		return nil, fmt.Errorf("admin UI: %w", err)
	}
	return asynqmon.New(asynqmon.Options{
		RootPath:     AdminRoot,
		RedisConnOpt: opt,
		ReadOnly:     !cfg.Admin.ReadWrite,
	}), nil
}

// adminConnOpt returns asynqmon's connection to the configured Redis: the
// same servers, credentials and TLS as the service's clients
// (redisx.NewClient), with asynqmon's own pools. asynqmon builds its
// clients from a RedisConnOpt, so it cannot share ours.
func adminConnOpt(r config.Redis) (asynq.RedisConnOpt, error) {
	tlsConf, err := redisx.TLSConfig(r)
	if err != nil {
		return nil, err
	}
	switch r.Topology() {
	case config.RedisSentinel:
		return asynq.RedisFailoverClientOpt{
			MasterName:       r.SentinelMaster,
			SentinelAddrs:    r.SentinelAddrs,
			SentinelUsername: r.SentinelUsername,
			SentinelPassword: r.SentinelPassword,
			Username:         r.ServerUsername,
			Password:         r.ServerPassword,
			DB:               r.DB,
			TLSConfig:        tlsConf,
		}, nil
	case config.RedisCluster:
		return asynq.RedisClusterClientOpt{
			Addrs:     r.ClusterAddrs,
			Username:  r.ServerUsername,
			Password:  r.ServerPassword,
			TLSConfig: tlsConf,
		}, nil
	}
	// redis.ParseURL rather than asynq.ParseRedisURI, which drops the
	// URL's ACL user name.
	opt, err := redis.ParseURL(r.URL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	return asynq.RedisClientOpt{
		Network:   opt.Network,
		Addr:      opt.Addr,
		Username:  opt.Username,
		Password:  opt.Password,
		DB:        opt.DB,
		TLSConfig: tlsConf,
	}, nil
}

// adminAuth admits requests with the configured basic-auth credentials or
// bearer token; others get 401 with a basic-auth challenge.
func adminAuth(a config.Admin) gin.HandlerFunc {
	return func(c *gin.Context) {
		if a.Token != "" {
			if tok, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer "); ok && equalSecret(tok, a.Token) {
				c.Next()
				return
			}
		}
		if a.User != "" && a.Password != "" {
			if u, p, ok := c.Request.BasicAuth(); ok && equalSecret(u, a.User) && equalSecret(p, a.Password) {
				c.Next()
				return
			}
		}
		c.Header("WWW-Authenticate", `Basic realm="timetravel admin", charset="UTF-8"`)
		abort(c, http.StatusUnauthorized, CodeUnauthorized, "", "credentials required")
	}
}
