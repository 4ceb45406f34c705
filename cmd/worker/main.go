// Command worker runs the time-travel task handlers: snapshots and
// aggregation, each queue with its own concurrency cap. Configuration:
// environment variables, see the README.
package main

import (
	"github.com/timetravel-ai/timetravel/internal/service"
	"github.com/timetravel-ai/timetravel/internal/worker"
)

func main() {
	service.Main("worker", worker.Run)
}
