package redistest

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/tooling/redisproc"
)

// Own returns a client of a redis-server of the test's own, stopped when
// the test ends, with scripts loaded (as a running process has them: a
// script's first run would count its NOSCRIPT fallback too). CommandsOf
// needs one: INFO commandstats counts every database of a server, so the
// shared server of New would count other tests' commands too.
func Own(t testing.TB, scripts ...*redis.Script) *redis.Client {
	t.Helper()
	srv, err := redisproc.Start(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = c.Close() })
	for _, sc := range scripts {
		if err := sc.Load(context.Background(), c).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// notCounted are the commands of the measurement itself and of a client's
// connection setup.
var notCounted = map[string]bool{"config": true, "info": true, "hello": true, "client": true, "select": true, "ping": true, "auth": true}

// CommandsOf returns the commands the server of c ran while f ran, those
// run by scripts included (as INFO commandstats counts them), in all and by
// name. Tests use it to pin what an operation costs Redis; c must be the
// only client at work on its server (Own).
func CommandsOf(t testing.TB, c *redis.Client, f func()) (int64, map[string]int64) {
	t.Helper()
	ctx := context.Background()
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	f()
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	by := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isStat := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isStat || notCounted[strings.SplitN(name, "|", 2)[0]] {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			t.Fatalf("commandstats line %q: %v", line, err)
		}
		by[name] += n
		total += n
	}
	return total, by
}
