package redisproc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// procsUnder returns the command lines of the running processes whose
// working directory is under dir: the servers a group started there
// (redis-server changes to its --dir, and rewrites its command line, so
// the directory is the mark to look for).
func procsUnder(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range ents {
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || !strings.HasPrefix(cwd, dir+string(filepath.Separator)) {
			continue // not a process, gone, or elsewhere
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		found = append(found, strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")))
	}
	return found
}

// noProcsAfter fails t, at its end, if a process under dir is still
// running. Register it before the group's Close: cleanups run last first.
func noProcsAfter(t *testing.T, dir string) {
	t.Cleanup(func() {
		if p := procsUnder(t, dir); len(p) > 0 {
			t.Errorf("processes left running: %q", p)
		}
	})
}

func TestStartFailsCleanly(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		start func(ctx context.Context, dir string) error
	}{
		{"sentinel", func(ctx context.Context, dir string) error {
			_, err := StartSentinel(ctx, SentinelOptions{Dir: dir})
			return err
		}},
		{"cluster", func(ctx context.Context, dir string) error {
			_, err := StartCluster(ctx, ClusterOptions{Dir: dir})
			return err
		}},
		{"cluster too small", func(ctx context.Context, dir string) error {
			_, err := StartCluster(context.Background(), ClusterOptions{Dir: dir, Masters: 2})
			return err
		}},
		{"sentinel bad password", func(ctx context.Context, dir string) error {
			_, err := StartSentinel(context.Background(), SentinelOptions{Dir: dir, Password: "two words"})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			// A context that has ended: whatever was started is undone.
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if err := tc.start(ctx, dir); err == nil {
				t.Fatal("start: no error")
			}
			if p := procsUnder(t, dir); len(p) > 0 {
				t.Errorf("processes left running after a failed start: %q", p)
			}
		})
	}
}
