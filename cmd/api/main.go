// Command api serves the time-travel HTTP API: it accepts jobs, queues their
// tasks, shows job state and streams job events. Configuration: environment
// variables, see the README.
package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/cli"
	"github.com/timetravel-ai/timetravel/internal/cloudwatch"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/service"
)

const usage = `api serves the time-travel HTTP API: it accepts jobs, queues their tasks,
shows job state and streams job events (Server-Sent Events).

Usage:
  api [-help | -version]

It takes no arguments. Its configuration is environment variables only, read
and validated at start (a bad value stops it with a message naming the
variable); the README's Configuration table lists every one with its
default. The main ones:
  REDIS_URL   Redis for queues, jobs and event streams (or Sentinel:
              REDIS_SENTINEL_MASTER, REDIS_SENTINEL_ADDRS; or Cluster:
              REDIS_CLUSTER_ADDRS)
  API_ADDR    listen address
  LOG_LEVEL   debug, info, warn or error; logs are JSON on stderr
  ENV         production requires API keys and credentials

The first SIGINT or SIGTERM starts a graceful shutdown, a second one exits
at once.
`

func main() {
	cli.Command{Name: "api", Usage: usage}.Handle()
	service.Main("api", run)
}

// run is the api's composition root: it builds the process's shared
// objects once and closes them on the way out, in reverse order.
func run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	// Pooled connections are shared by all requests and SSE streams; their
	// number does not grow with the number of clients.
	rdb, err := redisx.NewClient(cfg.Redis, "tt-api", 32, true)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer rdb.Close()
	// The api ends jobs too (cancels, submissions served whole from the
	// caches): their observations go to CloudWatch, when configured, with
	// the workers'. Stopped (a last flush) after the server has drained.
	if cfg.CloudWatch.Enabled() {
		pub, err := cloudwatch.FromConfig(ctx, cfg.CloudWatch, cloudwatch.Options{Log: log})
		if err != nil {
			return err
		}
		defer pub.Start()()
	}
	srv := api.New(cfg, api.Deps{Redis: rdb, Kinds: kinds.Registry(), Log: log})
	// The queue admin UI holds Redis connections of its own.
	defer srv.Close()
	return srv.Run(ctx)
}
