// Command chaos runs the chaos suite (package internal/tooling/chaos) against the
// real service on loopback and prints one Markdown table, one row per
// scenario, ready for docs/operations.md.
//
//	chaos [-run REGEXP] [-json FILE] [-dir DIR] [-keep] [-list] [-no-selfcheck]
//
// Before the scenarios it checks, on a small service, that it sees a
// duplicated event and a stuck job when there are some.
// It exits with status 1 when a scenario fails its acceptance (or cannot
// run through), 2 on bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"

	"github.com/timetravel-ai/timetravel/internal/cli"
	"github.com/timetravel-ai/timetravel/internal/tooling/chaos"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:])
	var usage usageError
	switch {
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

const usage = `chaos runs the chaos suite against the real service on loopback and prints
one Markdown table, one row per scenario, ready for docs/operations.md.

Usage:
  chaos [-run REGEXP] [-json FILE] [-dir DIR] [-keep] [-list] [-no-selfcheck]

It builds the binaries and starts redis-server (from PATH), the simulator,
workers and api replicas on free loopback ports; it reads no configuration of
the service's. Before the scenarios it checks, on a small service, that it
sees a duplicated event and a stuck job when there are some.
It exits with status 1 when a scenario fails its acceptance (or cannot run
through), 2 on bad usage.
`

// errFailed is returned when the suite ran and a scenario failed.
var errFailed = errors.New("some scenarios FAIL (see the table)")

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	runRe := fs.String("run", "", "run only the scenarios whose name matches this regular expression")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file")
	dir := fs.String("dir", "", "keep each scenario's logs and Redis files under this directory")
	keep := fs.Bool("keep", false, "keep the logs and Redis files (in a temporary directory unless -dir)")
	list := fs.Bool("list", false, "list the scenarios and exit")
	noCheck := fs.Bool("no-selfcheck", false, "skip the check that the suite sees an injected duplicate and a stuck job")
	if done, err := (cli.Command{Name: "chaos", Usage: usage, Flags: fs}).Parse(args, os.Stdout); done || err != nil {
		if err != nil {
			return usageError{err}
		}
		return nil
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q (select scenarios with -run)", fs.Args())}
	}
	if *list {
		fmt.Print(chaos.Describe())
		return nil
	}
	cfg := chaos.Config{Dir: *dir, Keep: *keep || *dir != "", Log: os.Stderr, SkipSelfCheck: *noCheck,
		Command: strings.Join(append([]string{"chaos"}, args...), " ")}
	if *runRe != "" {
		re, err := regexp.Compile(*runRe)
		if err != nil {
			return usageError{fmt.Errorf("-run: %w", err)}
		}
		cfg.Run = re
		if !slices.ContainsFunc(chaos.Names(), re.MatchString) {
			return usageError{fmt.Errorf("-run %q matches no scenario (have %s)", *runRe, strings.Join(chaos.Names(), ", "))}
		}
	}
	bin, err := os.MkdirTemp("", "chaos-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	fmt.Fprintln(os.Stderr, "building binaries...")
	if err := stack.Build(ctx, bin); err != nil {
		return err
	}
	cfg.BinDir = bin
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Println()
	rep.Markdown(os.Stdout)
	if *jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !rep.Pass() {
		return errFailed
	}
	return nil
}
