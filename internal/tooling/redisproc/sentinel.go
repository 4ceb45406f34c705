package redisproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelOptions configure StartSentinel. The zero value is a group named
// "mymaster" without passwords that fails over within a few seconds.
type SentinelOptions struct {
	// Dir holds the group's files, one directory per process. Empty: a
	// new temporary directory that Close removes.
	Dir string
	// MasterName is the name the sentinels monitor; "mymaster" when empty.
	MasterName string
	// Password, when set, is required by the master and the replica
	// (requirepass), used by the replica towards its master (masterauth)
	// and given to the sentinels (sentinel auth-pass).
	Password string
	// SentinelPassword, when set, is required by the sentinels
	// (requirepass) and used by them towards each other (sentinel
	// sentinel-pass).
	SentinelPassword string
	// DownAfter is how long the master must be unreachable before a
	// sentinel deems it down; 1s when zero.
	DownAfter time.Duration
	// FailoverTimeout is the sentinels' failover-timeout; a failover
	// that fails is tried again after twice this. 2s when zero.
	FailoverTimeout time.Duration
}

// SentinelGroup is a running Redis Sentinel group on loopback: one master,
// one replica of it and three sentinels (quorum two) that monitor it.
type SentinelGroup struct {
	// MasterName is the name the sentinels know the master by.
	MasterName string
	// SentinelAddrs are host:port of the three sentinels.
	SentinelAddrs []string
	// Password is the master's and replica's password ("" for none).
	Password string
	// SentinelPassword is the sentinels' password ("" for none).
	SentinelPassword string

	master, replica *Server
	sentinels       []*Server
	dir             string
	ownDir          bool

	mu         sync.Mutex
	lastMaster string // the master address before the next failover
	closeOnce  sync.Once
}

// Master returns the process that started as the master. After a
// failover it is no longer the master (and after Kill not running).
func (g *SentinelGroup) Master() *Server { return g.master }

// Replica returns the process that started as the replica: the one that a
// failover promotes.
func (g *SentinelGroup) Replica() *Server { return g.replica }

// Sentinels returns the three sentinel processes.
func (g *SentinelGroup) Sentinels() []*Server { return g.sentinels }

// StartSentinel starts a master, a replica of it and three sentinels, each
// on a free loopback port, and returns once every sentinel sees the master
// up, the replica with its link to the master up, and the two other
// sentinels: a failover can start from then on. If ctx ends (or 60s pass)
// before that, everything started is stopped and removed and an error
// returned. Close stops the group.
func StartSentinel(ctx context.Context, o SentinelOptions) (g *SentinelGroup, err error) {
	if o.MasterName == "" {
		o.MasterName = "mymaster"
	}
	if o.DownAfter <= 0 {
		o.DownAfter = time.Second
	}
	if o.FailoverTimeout <= 0 {
		o.FailoverTimeout = 2 * time.Second
	}
	for _, p := range []string{o.Password, o.SentinelPassword, o.MasterName} {
		if strings.ContainsAny(p, " \t\r\n\"'") {
			return nil, errors.New("redisproc: sentinel: names and passwords must not hold spaces or quotes")
		}
	}
	dir, own, err := groupDir(o.Dir, "redis-sentinel-")
	if err != nil {
		return nil, err
	}
	g = &SentinelGroup{MasterName: o.MasterName, Password: o.Password, SentinelPassword: o.SentinelPassword, dir: dir, ownDir: own}
	defer func() {
		if err != nil {
			g.Close()
			g = nil
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()

	data := []string{"--repl-diskless-sync-delay", "0"}
	if o.Password != "" {
		data = append(data, "--requirepass", o.Password, "--masterauth", o.Password)
	}
	if g.master, err = startNode(ctx, filepath.Join(dir, "master"), Options{}, nodeSpec{extra: data, password: o.Password}); err != nil {
		return g, fmt.Errorf("redisproc: sentinel master: %w", err)
	}
	host, port, _ := net.SplitHostPort(g.master.Addr)
	repl := append(append([]string(nil), data...), "--replicaof", host, port)
	if g.replica, err = startNode(ctx, filepath.Join(dir, "replica"), Options{}, nodeSpec{extra: repl, password: o.Password}); err != nil {
		return g, fmt.Errorf("redisproc: sentinel replica: %w", err)
	}
	g.lastMaster = g.master.Addr
	// A sentinel learns the replicas from the master's INFO, which it asks
	// for every 10s: started after the replica has synced, it finds it at
	// once.
	if err := poll(ctx, "replica sync", func(ctx context.Context) error {
		return replicaLinkUp(ctx, g.replica.Addr, o.Password)
	}); err != nil {
		return g, err
	}

	for i := range 3 {
		sdir := filepath.Join(dir, fmt.Sprintf("sentinel-%d", i))
		if err := os.MkdirAll(sdir, 0o755); err != nil {
			return g, fmt.Errorf("redisproc: sentinel dir: %w", err)
		}
		conf := filepath.Join(sdir, "sentinel.conf")
		if err := os.WriteFile(conf, []byte(sentinelConf(o, host, port)), 0o600); err != nil {
			return g, fmt.Errorf("redisproc: sentinel config: %w", err)
		}
		s, err := startNode(ctx, sdir, Options{}, nodeSpec{conf: conf, extra: []string{"--sentinel"}, password: o.SentinelPassword})
		if err != nil {
			return g, fmt.Errorf("redisproc: sentinel %d: %w", i, err)
		}
		g.sentinels = append(g.sentinels, s)
		g.SentinelAddrs = append(g.SentinelAddrs, s.Addr)
	}
	if err := poll(ctx, "sentinels ready", g.ready); err != nil {
		return g, err
	}
	return g, nil
}

// sentinelConf is one sentinel's config file: Redis rewrites it as the
// sentinel learns, so each sentinel has its own.
func sentinelConf(o SentinelOptions, host, port string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sentinel resolve-hostnames no\n")
	fmt.Fprintf(&b, "sentinel announce-hostnames no\n")
	fmt.Fprintf(&b, "sentinel monitor %s %s %s 2\n", o.MasterName, host, port)
	fmt.Fprintf(&b, "sentinel down-after-milliseconds %s %d\n", o.MasterName, o.DownAfter.Milliseconds())
	fmt.Fprintf(&b, "sentinel failover-timeout %s %d\n", o.MasterName, o.FailoverTimeout.Milliseconds())
	fmt.Fprintf(&b, "sentinel parallel-syncs %s 1\n", o.MasterName)
	if o.Password != "" {
		fmt.Fprintf(&b, "sentinel auth-pass %s %s\n", o.MasterName, o.Password)
	}
	if o.SentinelPassword != "" {
		fmt.Fprintf(&b, "requirepass %s\n", o.SentinelPassword)
		fmt.Fprintf(&b, "sentinel sentinel-pass %s\n", o.SentinelPassword)
	}
	return b.String()
}

// replicaLinkUp reports nil once the server at addr is a replica whose link
// to its master is up.
func replicaLinkUp(ctx context.Context, addr, password string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, MaxRetries: -1, PoolSize: 1})
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "master_link_status:up") {
		return fmt.Errorf("%s: master link not up", addr)
	}
	return nil
}

// sentinelClient returns a client of the sentinel at addr; close it.
func (g *SentinelGroup) sentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: addr, Password: g.SentinelPassword, MaxRetries: -1, PoolSize: 1})
}

// ready reports nil once every sentinel sees the master up with one
// replica whose link is up, and the two other sentinels.
func (g *SentinelGroup) ready(ctx context.Context) error {
	for _, addr := range g.SentinelAddrs {
		if err := g.sentinelReady(ctx, addr); err != nil {
			return fmt.Errorf("sentinel %s: %w", addr, err)
		}
	}
	return nil
}

func (g *SentinelGroup) sentinelReady(ctx context.Context, addr string) error {
	c := g.sentinelClient(addr)
	defer c.Close()
	m, err := c.Master(ctx, g.MasterName).Result()
	if err != nil {
		return fmt.Errorf("SENTINEL MASTER: %w", err)
	}
	if m["flags"] != "master" {
		return fmt.Errorf("master flags %q", m["flags"])
	}
	reps, err := c.Replicas(ctx, g.MasterName).Result()
	if err != nil {
		return fmt.Errorf("SENTINEL REPLICAS: %w", err)
	}
	ok := 0
	for _, r := range reps {
		if r["flags"] == "slave" && r["master-link-status"] == "ok" &&
			net.JoinHostPort(r["ip"], r["port"]) == g.replica.Addr {
			ok++
		}
	}
	if ok != 1 {
		return fmt.Errorf("replicas %v, want %s up", reps, g.replica.Addr)
	}
	sens, err := c.Sentinels(ctx, g.MasterName).Result()
	if err != nil {
		return fmt.Errorf("SENTINEL SENTINELS: %w", err)
	}
	if len(sens) != len(g.SentinelAddrs)-1 {
		return fmt.Errorf("%d other sentinels known, want %d", len(sens), len(g.SentinelAddrs)-1)
	}
	return nil
}

// MasterAddr returns the master's address as the sentinels report it:
// the answer of the first sentinel (in SentinelAddrs order) that answers.
func (g *SentinelGroup) MasterAddr(ctx context.Context) (string, error) {
	var errs []error
	for _, addr := range g.SentinelAddrs {
		c := g.sentinelClient(addr)
		a, err := c.GetMasterAddrByName(ctx, g.MasterName).Result()
		c.Close()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1]), nil
		}
		errs = append(errs, fmt.Errorf("sentinel %s: %v %w", addr, a, err))
	}
	return "", fmt.Errorf("redisproc: master address: %w", errors.Join(errs...))
}

// WaitFailover waits until the sentinels report a master other than the
// one they reported when the group started or the last WaitFailover
// returned: every sentinel that answers (at least a quorum, two) reports
// the same new address and the server there says it is a master. It
// returns that address. Kill the master (or let it fail) first; the wait
// ends with an error when ctx does.
func (g *SentinelGroup) WaitFailover(ctx context.Context) (string, error) {
	g.mu.Lock()
	old := g.lastMaster
	g.mu.Unlock()
	var addr string
	err := poll(ctx, "sentinel failover", func(ctx context.Context) error {
		agreed := ""
		answered := 0
		for _, sa := range g.SentinelAddrs {
			c := g.sentinelClient(sa)
			a, err := c.GetMasterAddrByName(ctx, g.MasterName).Result()
			c.Close()
			if err != nil || len(a) != 2 {
				continue // a sentinel that is down does not vote
			}
			got := net.JoinHostPort(a[0], a[1])
			if got == old {
				return fmt.Errorf("sentinel %s still reports %s", sa, old)
			}
			if agreed != "" && got != agreed {
				return fmt.Errorf("sentinels disagree: %s and %s", agreed, got)
			}
			agreed = got
			answered++
		}
		if answered < 2 {
			return fmt.Errorf("%d sentinels answered, want at least 2", answered)
		}
		if err := isMaster(ctx, agreed, g.Password); err != nil {
			return err
		}
		addr = agreed
		return nil
	})
	if err != nil {
		return "", err
	}
	g.mu.Lock()
	g.lastMaster = addr
	g.mu.Unlock()
	return addr, nil
}

// Close stops every process of the group and waits for them, then removes
// the group's directory when StartSentinel created it. It is safe to call
// more than once.
func (g *SentinelGroup) Close() {
	g.closeOnce.Do(func() {
		// Sentinels first, so that they do not react to the data
		// servers going.
		stopAll(g.sentinels)
		stopAll([]*Server{g.master, g.replica})
		if g.ownDir {
			_ = os.RemoveAll(g.dir)
		}
	})
}
