// Command api serves the time-travel HTTP API: it accepts jobs, queues their
// tasks, shows job state and streams job events. Configuration: environment
// variables, see the README.
package main

import (
	"context"
	"log/slog"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/service"
)

func main() {
	service.Main("api", run)
}

func run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	// Pooled connections are shared by all requests and SSE streams; their
	// number does not grow with the number of clients.
	rdb, err := cfg.NewRedis("tt-api", 32, true)
	if err != nil {
		return err
	}
	defer rdb.Close()
	return api.New(cfg, rdb, log).Run(ctx)
}
