package redisproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout bounds StartSentinel and StartCluster when ctx has no
// earlier deadline: a group that is not ready by then will not be.
const startTimeout = 60 * time.Second

// pollEvery is how often a wait asks the servers again.
const pollEvery = 50 * time.Millisecond

// poll calls check until it returns nil or ctx ends; then it returns ctx's
// error wrapped with the last answer of check, which says what was missing.
func poll(ctx context.Context, what string, check func(context.Context) error) error {
	return pollEach(ctx, what, 2*time.Second, check)
}

// pollEach is poll with each call of check bounded by per.
func pollEach(ctx context.Context, what string, per time.Duration, check func(context.Context) error) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		// Each check gets a bounded slice of ctx so that a server that
		// hangs cannot hold the wait past its deadline.
		cctx, cancel := context.WithTimeout(ctx, per)
		err := check(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redisproc: %s: %w (last: %v)", what, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// isMaster fails unless the server at addr says it is a master (ROLE).
func isMaster(ctx context.Context, addr, password string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, MaxRetries: -1, PoolSize: 1})
	defer c.Close()
	role, err := c.Do(ctx, "ROLE").Slice()
	if err != nil {
		return fmt.Errorf("ROLE at %s: %w", addr, err)
	}
	if len(role) == 0 || role[0] != "master" {
		return fmt.Errorf("%s has role %v", addr, role)
	}
	return nil
}

// stopAll stops every server at once and waits for them all.
func stopAll(servers []*Server) {
	var wg sync.WaitGroup
	for _, s := range servers {
		if s == nil {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); s.Stop() }()
	}
	wg.Wait()
}

// groupDir returns dir, created when missing, or a new temporary directory
// that the caller owns (own is true) and removes when it closes.
func groupDir(dir, pattern string) (path string, own bool, err error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", false, fmt.Errorf("redisproc: group dir: %w", err)
		}
		return dir, false, nil
	}
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", false, fmt.Errorf("redisproc: group dir: %w", err)
	}
	return d, true, nil
}

// CLIBinary returns the path of redis-cli, or an error that says how to
// install it when it is missing.
func CLIBinary() (string, error) {
	if p := os.Getenv("REDIS_CLI_BIN"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("redis-cli")
	if err != nil {
		return "", fmt.Errorf("redis-cli not found on PATH (install it: apt-get install -y redis-tools): %w", err)
	}
	return p, nil
}
