// Package redistest gives each test its own empty database on one real
// redis-server that the test binary starts and stops. Tests stay isolated and
// can run in parallel, including tests of asynq, whose key names are fixed.
package redistest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/timetravel-ai/timetravel/internal/tooling/redisproc"
)

var (
	mu     sync.Mutex
	server *redisproc.Server
	nextDB atomic.Int32
)

// Main starts redis-server, runs the tests and stops it. Call it from
// TestMain: `func TestMain(m *testing.M) { redistest.Main(m) }`.
// It also fails the run when goroutines started by the tests are still
// running at the end (go.uber.org/goleak).
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "redistest:", err)
		os.Exit(1)
	}
	s, err := redisproc.Start(context.Background(), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "redistest:", err)
		os.Exit(1)
	}
	mu.Lock()
	server = s
	mu.Unlock()
	before := goleak.IgnoreCurrent() // the server's own wait goroutine
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(before); err != nil {
			fmt.Fprintln(os.Stderr, "redistest: goroutines left running:", err)
			code = 1
		}
	}
	s.Stop()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// DB is one test's database.
type DB struct {
	// URL is the redis:// URL of the database.
	URL string
	// Addr is host:port of the server.
	Addr string
	// Index is the database number.
	Index int
	// Client is connected to the database and closed at the end of the test.
	Client *redis.Client
}

// New returns an empty database of its own for t.
func New(t testing.TB) DB {
	t.Helper()
	mu.Lock()
	s := server
	mu.Unlock()
	if s == nil {
		t.Fatal("redistest: Main was not called from TestMain")
	}
	idx := int(nextDB.Add(1))
	if idx >= 1024 {
		t.Fatal("redistest: out of databases")
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DB: idx})
	if err := c.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("redistest: flush db %d: %v", idx, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return DB{URL: s.URL(idx), Addr: s.Addr, Index: idx, Client: c}
}

// NewClient returns another client of the database, with connections of its
// own, as another process would have. It is closed at the end of the test.
func (d DB) NewClient(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}
