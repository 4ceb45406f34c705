// Package redisproc starts a throwaway redis-server process on a free loopback
// port, for tests, the demo, benchmarks and the chaos suite. It never touches
// a Redis that it did not start.
//
// A Server can be stopped (SHUTDOWN or SIGKILL) and started again on the same
// port and directory, with its data or empty, so that clients configured with
// its address meet a Redis outage and then the same Redis again.
//
// StartSentinel starts a Redis Sentinel group (a master, a replica, three
// sentinels run as `redis-server --sentinel`) and StartCluster a Redis
// Cluster (three masters with a replica each, joined with `redis-cli
// --cluster create`), both on loopback and tuned to fail over within a few
// seconds; their WaitFailover methods wait until a SIGKILLed master has
// been replaced.
package redisproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// File names of the server's data in its directory.
const (
	aofDir  = "appendonlydir"
	aofName = "appendonly.aof"
	rdbName = "dump.rdb"
)

// ErrStopped is returned by Restart and RestartEmpty after Stop: a stopped
// Server is never started again.
var ErrStopped = errors.New("redisproc: server was stopped")

// Options configure StartWith.
type Options struct {
	// AOF turns on the append-only file with appendfsync always: every
	// write Redis acknowledged is on disk before the answer, so a restart
	// after SHUTDOWN or SIGKILL has all of it. Off (the default), the
	// server keeps nothing on disk and a restart always comes back empty.
	AOF bool
}

// Server is a redis-server child process on a fixed loopback address.
type Server struct {
	// Addr is host:port of the server on loopback. It stays the same
	// across Restart.
	Addr string

	bin  string
	dir  string
	port int
	opts Options
	spec nodeSpec

	mu      sync.Mutex
	p       *process // the current (or last) process
	stopped bool
}

// nodeSpec is what a Sentinel or Cluster node adds to a plain server; the
// zero value is a plain server.
type nodeSpec struct {
	// conf is a config file given before the flags: a sentinel needs
	// one that it can rewrite.
	conf string
	// extra flags follow the common ones and override them.
	extra []string
	// password is sent with AUTH before PING and SHUTDOWN.
	password string
	// busPort asks for a port whose cluster bus port (+10000) is free too.
	busPort bool
}

// process is one run of redis-server.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// URL returns the redis:// URL of database db on the server.
func (s *Server) URL(db int) string {
	return fmt.Sprintf("redis://%s/%d", s.Addr, db)
}

// Binary returns the path of redis-server, or an error that says how to
// install it when it is missing.
func Binary() (string, error) {
	if p := os.Getenv("REDIS_SERVER_BIN"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redis-server not found on PATH (install it: apt-get install -y redis-server): %w", err)
	}
	return p, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// serverPort returns a free port below the kernel's ephemeral range when
// there is room for one, else any free port. While the server is down its
// clients keep dialling it, and the kernel may hand a port of the
// ephemeral range to one of those dials as its source port; a port outside
// that range can always be bound again by Restart.
func serverPort() (int, error) {
	lo := ephemeralLow()
	const floor = 10000
	if lo-floor >= 1000 {
		for range 50 {
			p := floor + rand.IntN(lo-floor)
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err == nil {
				l.Close()
				return p, nil
			}
		}
	}
	return FreePort()
}

// clusterPort is like serverPort for a cluster node, which listens on its
// port and on port+10000 for the cluster bus: both must be free, and both
// below the ephemeral range when it leaves room for that.
func clusterPort() (int, error) {
	lo := ephemeralLow()
	const floor, bus = 10000, 10000
	for range 50 {
		var p int
		if lo-bus-floor >= 1000 {
			p = floor + rand.IntN(lo-bus-floor)
		} else {
			var err error
			if p, err = FreePort(); err != nil {
				return 0, err
			}
			if p+bus > 65535 {
				continue
			}
		}
		if portFree(p) && portFree(p+bus) {
			return p, nil
		}
	}
	return 0, errors.New("redisproc: no free port pair for a cluster node")
}

// portFree reports whether port p on 127.0.0.1 could be bound a moment ago.
func portFree(p int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range, or 0 when
// it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// Start launches redis-server with persistence off; see StartWith.
func Start(ctx context.Context, dir string) (*Server, error) {
	return StartWith(ctx, dir, Options{})
}

// StartWith launches redis-server on a free loopback port with working
// directory dir (created when missing) and returns once it answers PING.
// The process is killed if ctx ends before that. Stop it with Stop.
func StartWith(ctx context.Context, dir string, o Options) (*Server, error) {
	return startNode(ctx, dir, o, nodeSpec{})
}

// startNode launches one redis-server like StartWith, with spec's additions.
func startNode(ctx context.Context, dir string, o Options, spec nodeSpec) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("redis dir: %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := serverPort()
		if spec.busPort {
			port, err = clusterPort()
		}
		if err != nil {
			return nil, err
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), bin: bin, dir: dir, port: port, opts: o, spec: spec}
		p, err := s.launch(ctx)
		if err == nil {
			s.p = p
			return s, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("start redis-server: %w", lastErr)
}

// launch starts one process on s.port and waits for PING.
func (s *Server) launch(ctx context.Context) (*process, error) {
	logPath := filepath.Join(s.dir, fmt.Sprintf("redis-%d.log", s.port))
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--dir", s.dir,
		"--dbfilename", rdbName,
		"--logfile", logPath,
		"--maxclients", "20000",
		"--databases", "1024",
		"--protected-mode", "yes",
	}
	if s.opts.AOF {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always",
			"--appenddirname", aofDir, "--appendfilename", aofName)
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, s.spec.extra...)
	if s.spec.conf != "" {
		// redis-server takes the config file only as its first argument.
		args = append([]string{s.spec.conf}, args...)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()

	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if ping(s.Addr, s.spec.password) == nil {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("redis-server exited at start (%v): %s", p.err, tail(logPath))
		case <-ctx.Done():
			p.kill()
			return nil, ctx.Err()
		case <-deadline.C:
			p.kill()
			return nil, errors.New("redis-server did not answer PING within 10s: " + tail(logPath))
		case <-tick.C:
		}
	}
}

// ping sends an inline PING, after AUTH when password is set, and expects
// +PONG.
func ping(addr, password string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	r := bufio.NewReader(c)
	if err := auth(c, r, password); err != nil {
		return err
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected PING answer %q", line)
	}
	return nil
}

// auth sends AUTH password on c and expects +OK; it does nothing without a
// password. The password goes as a RESP array, so any bytes are safe.
func auth(c net.Conn, r *bufio.Reader, password string) error {
	if password == "" {
		return nil
	}
	if _, err := fmt.Fprintf(c, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(password), password); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+OK") {
		return fmt.Errorf("AUTH: %s", strings.TrimSpace(line))
	}
	return nil
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// current returns the current (or last) process.
func (s *Server) current() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

// Running reports whether the server's process is running.
func (s *Server) Running() bool {
	return !s.current().exited()
}

// Shutdown sends the SHUTDOWN command, as an operator would, and returns
// once the process has exited: with AOF, every acknowledged write is then
// on disk. If the process has not exited when ctx ends it is killed and
// ctx's error returned. Shutting down a server that is not running does
// nothing.
func (s *Server) Shutdown(ctx context.Context) error {
	p := s.current()
	if p.exited() {
		return nil
	}
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return fmt.Errorf("redisproc: shutdown: %w", err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	err = auth(c, r, s.spec.password)
	if err == nil {
		_, err = c.Write([]byte("SHUTDOWN\r\n"))
	}
	if err == nil {
		// Redis closes the connection without an answer when it goes;
		// an answer is an error such as "-ERR Errors trying to SHUTDOWN".
		line, _ := r.ReadString('\n')
		if strings.HasPrefix(line, "-") {
			err = fmt.Errorf("redisproc: shutdown: %s", strings.TrimSpace(line))
		}
	}
	c.Close()
	if err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.kill()
		return fmt.Errorf("redisproc: shutdown: %w", ctx.Err())
	}
}

// Kill sends SIGKILL to the server, as a crash would, and returns once it
// has exited. Without AOF its data is gone; with AOF (appendfsync always)
// every acknowledged write survives. Killing a server that is not running
// does nothing.
func (s *Server) Kill() {
	if p := s.current(); !p.exited() {
		p.kill()
	}
}

// Restart starts the server again on the same port and directory, with the
// data it left on disk (all acknowledged writes with AOF, nothing without),
// and returns once it answers PING. The server must not be running (stop
// it with Shutdown or Kill first). The port may be busy for a moment after
// the old process went, so binding it is tried again until ctx ends.
func (s *Server) Restart(ctx context.Context) error {
	return s.restart(ctx, false)
}

// RestartEmpty deletes the server's data files, then starts it again like
// Restart: the clients find the same address and no data at all, as after
// a failover to an empty replica or a FLUSHALL.
func (s *Server) RestartEmpty(ctx context.Context) error {
	return s.restart(ctx, true)
}

func (s *Server) restart(ctx context.Context, empty bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrStopped
	}
	if !s.p.exited() {
		return errors.New("redisproc: restart: server still running (Shutdown or Kill it first)")
	}
	if empty {
		for _, name := range []string{aofDir, rdbName} {
			if err := os.RemoveAll(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("redisproc: remove data: %w", err)
			}
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		p, err := s.launch(ctx)
		if err == nil {
			s.p = p
			return nil
		}
		if !strings.Contains(err.Error(), "in use") {
			return fmt.Errorf("redisproc: restart: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redisproc: restart: %w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// Stop terminates the server and waits for it to exit; it is never started
// again. It is safe to call more than once and on a server that is down.
func (s *Server) Stop() {
	s.mu.Lock()
	s.stopped = true
	p := s.p
	s.mu.Unlock()
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.kill()
	}
}

// Pid returns the process id of the server's current (or last) process.
func (s *Server) Pid() int { return s.current().cmd.Process.Pid }
