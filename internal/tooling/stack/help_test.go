package stack

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBinariesHelpAndVersion builds every binary of cmd/ and checks that
// each answers help and version on stdout with status 0, before it reads
// its configuration or connects anywhere: the environment given to them
// would make any of them fail at once (or hang until the timeout) if it
// started.
func TestBinariesHelpAndVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary")
	}
	const testVersion = "v0.0.0-helptest"
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build := exec.CommandContext(ctx, goTool(), "build", "-o", bin+string(filepath.Separator),
		"-ldflags=-X "+modulePath+"/internal/version.Version="+testVersion, "./cmd/...")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// Configuration that no binary can start with.
	badEnv := []string{"REDIS_URL=::not a url", "API_ADDR=bad address", "WORKER_ADDR=bad address",
		"LLMSIM_ADDR=bad address", "LLMSIM_TTFT=never", "PATH="}

	binaries := []struct {
		name string
		help string // the help starts so
	}{
		{"api", "api serves"},
		{"worker", "worker runs"},
		{"llmsim", "llmsim runs"},
		{"ttctl", "Usage:"},
		{"bench", "bench measures"},
		{"chaos", "chaos runs"},
	}
	requests := []struct {
		arg     string
		version bool
	}{{"-help", false}, {"--help", false}, {"-h", false}, {"-version", true}, {"--version", true}}
	for _, b := range binaries {
		for _, r := range requests {
			t.Run(b.name+" "+r.arg, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, filepath.Join(bin, b.name), r.arg)
				cmd.Env = badEnv
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				var exit *exec.ExitError
				if errors.As(err, &exit) {
					t.Fatalf("exit status %d; stdout %q; stderr %q", exit.ExitCode(), stdout.String(), stderr.String())
				} else if err != nil {
					t.Fatal(err)
				}
				if stderr.Len() > 0 {
					t.Errorf("stderr %q", stderr.String())
				}
				switch out := stdout.String(); {
				case r.version && out != testVersion+"\n":
					t.Errorf("stdout %q, want %q", out, testVersion+"\n")
				case !r.version && (!strings.HasPrefix(out, b.help) || !strings.Contains(out, "Usage:")):
					t.Errorf("stdout %q, want a help that starts with %q", out, b.help)
				}
			})
		}
	}
}
