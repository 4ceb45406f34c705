package redisproc

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// do sends one inline command and returns the first line of the answer,
// and the second for a bulk string ("$3" then "abc").
func do(t *testing.T, addr, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "$") && line != "$-1" {
		v, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		return strings.TrimSpace(v)
	}
	return line
}

func TestRestartKeepsAOFData(t *testing.T) {
	t.Parallel()
	s, err := StartWith(t.Context(), t.TempDir(), Options{AOF: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	addr := s.Addr
	if got := do(t, addr, "SET k1 v1"); got != "+OK" {
		t.Fatalf("SET: %q", got)
	}

	// A crash: the write acknowledged before it is on disk.
	s.Kill()
	if s.Running() {
		t.Fatal("running after Kill")
	}
	if err := s.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s.Addr != addr {
		t.Errorf("address %s after restart, want %s", s.Addr, addr)
	}
	if got := do(t, addr, "GET k1"); got != "v1" {
		t.Errorf("after SIGKILL and restart GET k1 = %q, want v1", got)
	}

	// An operator's SHUTDOWN, then the same again.
	if got := do(t, addr, "SET k2 v2"); got != "+OK" {
		t.Fatalf("SET: %q", got)
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := do(t, addr, "GET k2"); got != "v2" {
		t.Errorf("after SHUTDOWN and restart GET k2 = %q, want v2", got)
	}

	// Empty: the files are gone, the address is the same.
	s.Kill()
	if err := s.RestartEmpty(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := do(t, addr, "DBSIZE"); got != ":0" {
		t.Errorf("after RestartEmpty DBSIZE = %q, want :0", got)
	}
}

func TestRestartWithoutAOFIsEmpty(t *testing.T) {
	t.Parallel()
	s, err := Start(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if got := do(t, s.Addr, "SET k v"); got != "+OK" {
		t.Fatalf("SET: %q", got)
	}
	if err := s.Restart(t.Context()); err == nil {
		t.Fatal("Restart of a running server: no error")
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := do(t, s.Addr, "DBSIZE"); got != ":0" {
		t.Errorf("DBSIZE = %q, want :0 (no persistence)", got)
	}
	s.Stop()
	s.Stop()
	if err := s.Restart(context.Background()); err != ErrStopped {
		t.Errorf("Restart after Stop: %v, want ErrStopped", err)
	}
}
