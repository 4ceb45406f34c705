// Command worker runs the time-travel task handlers: snapshots and
// aggregation, each queue with its own concurrency cap. Configuration:
// environment variables, see the README.
package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/timetravel-ai/timetravel/internal/cli"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/service"
	"github.com/timetravel-ai/timetravel/internal/worker"
)

const usage = `worker runs the time-travel task handlers: snapshots, aggregation, webhook
deliveries and cache warming, each queue with its own concurrency cap. It
serves /healthz, /readyz and /metrics on WORKER_ADDR.

Usage:
  worker [-help | -version]

It takes no arguments. Its configuration is environment variables only, read
and validated at start (a bad value stops it with a message naming the
variable); the README's Configuration table lists every one with its
default. The main ones:
  REDIS_URL              Redis for queues, jobs and event streams (or
                         Sentinel: REDIS_SENTINEL_MASTER, REDIS_SENTINEL_ADDRS;
                         or Cluster: REDIS_CLUSTER_ADDRS)
  WORKER_ADDR            health and metrics listen address
  LOG_LEVEL              debug, info, warn or error; logs are JSON on stderr
  OPENAI_BASE_URL, OPENAI_API_KEY, LLM_MODEL, LLM_PROVIDERS
                         the LLM provider(s) and models
  SNAPSHOT_CONCURRENCY, AGGREGATE_CONCURRENCY
                         tasks one worker runs at once

The first SIGINT or SIGTERM starts a graceful shutdown (running tasks get
SHUTDOWN_TIMEOUT to finish), a second one exits at once.
`

func main() {
	cli.Command{Name: "worker", Usage: usage}.Handle()
	service.Main("worker", run)
}

// run is the worker's composition root: it builds the process's shared
// objects once and closes them on the way out.
func run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	rdb, err := redisx.NewClient(cfg.Redis, "tt-worker", worker.PoolSize(cfg), false)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer rdb.Close()
	return worker.Run(ctx, cfg, worker.Deps{Redis: rdb, Kinds: kinds.Registry(), Log: log})
}
