// Command ttctl is the command-line client of the time-travel service.
//
//	ttctl ask [-api URL] [-time-points 2023-01-01,today] [-model M] [-complexity C] "question"
//	ttctl ensemble [-api URL] -models A,B,C [-synthesis-model M] "question"
//	ttctl demo [-question Q] [-ensemble-models A,B,C]
//	ttctl -version
//
// See internal/tooling/ttctl for what each command does.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/timetravel-ai/timetravel/internal/cli"
	"github.com/timetravel-ai/timetravel/internal/tooling/ttctl"
)

func main() {
	// ttctl.Main answers help itself; this answers -version.
	cli.Command{Name: "ttctl"}.Handle()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ttctl.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
