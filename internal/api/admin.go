package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"

	"github.com/timetravel-ai/timetravel/internal/config"
)

// AdminRoot is where the queue admin UI (asynqmon) is mounted.
const AdminRoot = "/admin/queues"

// newAdminUI returns asynqmon on the api's Redis (REDIS_URL), read-only
// unless ADMIN_READ_WRITE is set. asynqmon serves under its RootPath: the
// prefix is not stripped.
func newAdminUI(cfg config.Config) (*asynqmon.HTTPHandler, error) {
	opt, err := asynq.ParseRedisURI(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("admin UI: REDIS_URL: %w", err)
	}
	return asynqmon.New(asynqmon.Options{
		RootPath:     AdminRoot,
		RedisConnOpt: opt,
		ReadOnly:     !cfg.Admin.ReadWrite,
	}), nil
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
