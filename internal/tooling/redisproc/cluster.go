package redisproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterOptions configure StartCluster. The zero value is three masters
// with one replica each, no password, that fail over within a few seconds.
type ClusterOptions struct {
	// Dir holds the cluster's files, one directory per node. Empty: a new
	// temporary directory that Close removes.
	Dir string
	// Masters is the number of masters, each with one replica; 3 when
	// zero (redis-cli creates no cluster with fewer).
	Masters int
	// Password, when set, is required by every node (requirepass) and
	// used by replicas towards their master (masterauth).
	Password string
	// NodeTimeout is the cluster-node-timeout: how long a master must be
	// unreachable before its replica takes over. 1s when zero.
	NodeTimeout time.Duration
}

// Cluster is a running Redis Cluster on loopback, created with redis-cli
// --cluster create: Masters()[i] serves a third (for three masters) of the
// hash slots and Replicas()[i] replicates it.
type Cluster struct {
	// Addrs are host:port of every node, masters first: seeds for
	// clients (any one of them would do).
	Addrs []string
	// Password is the nodes' password ("" for none).
	Password string

	masters, replicas []*Server
	dir               string
	ownDir            bool

	mu        sync.Mutex
	slotOf    map[string]int // master address → one slot it serves
	closeOnce sync.Once
}

// Masters returns the nodes that were masters when the cluster started,
// ordered by the slots they served.
func (c *Cluster) Masters() []*Server { return c.masters }

// Replicas returns the nodes that were replicas when the cluster started:
// Replicas()[i] replicated Masters()[i].
func (c *Cluster) Replicas() []*Server { return c.replicas }

// StartCluster starts 2×Masters redis-server nodes in cluster mode on free
// loopback ports (each with its cluster bus port free too), joins them
// with redis-cli --cluster create --cluster-replicas 1 and returns once
// every node reports cluster_state:ok with all slots served, agrees on
// which master serves which slots, and every master has its replica with
// the replication link up. If ctx ends (or 60s pass) before that,
// everything started is stopped and removed and an error returned. Close
// stops the cluster.
func StartCluster(ctx context.Context, o ClusterOptions) (c *Cluster, err error) {
	if o.Masters == 0 {
		o.Masters = 3
	}
	if o.Masters < 3 {
		return nil, fmt.Errorf("redisproc: cluster: %d masters, want at least 3", o.Masters)
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = time.Second
	}
	cli, err := CLIBinary()
	if err != nil {
		return nil, err
	}
	dir, own, err := groupDir(o.Dir, "redis-cluster-")
	if err != nil {
		return nil, err
	}
	c = &Cluster{Password: o.Password, dir: dir, ownDir: own}
	var nodes []*Server
	defer func() {
		if err != nil {
			stopAll(nodes)
			if own {
				_ = os.RemoveAll(dir)
			}
			c = nil
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()

	// Start the nodes side by side: each waits for its own PING.
	n := 2 * o.Masters
	nodes = make([]*Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ndir := filepath.Join(dir, fmt.Sprintf("node-%d", i))
			args := []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(ndir, "nodes.conf"),
				"--cluster-node-timeout", strconv.FormatInt(o.NodeTimeout.Milliseconds(), 10),
				"--repl-diskless-sync-delay", "0",
			}
			if o.Password != "" {
				args = append(args, "--requirepass", o.Password, "--masterauth", o.Password)
			}
			nodes[i], errs[i] = startNode(ctx, ndir, Options{}, nodeSpec{extra: args, password: o.Password, busPort: true})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("redisproc: cluster node: %w", err)
	}
	addrs := make([]string, n)
	for i, s := range nodes {
		addrs[i] = s.Addr
	}

	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.Env = os.Environ()
	if o.Password != "" {
		// The environment, not -a: redis-cli warns about -a, and the
		// password stays out of the process list.
		cmd.Env = append(cmd.Env, "REDISCLI_AUTH="+o.Password)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redisproc: redis-cli --cluster create: %w: %s", err, lastLines(string(out), 15))
	}

	byAddr := make(map[string]*Server, n)
	for _, s := range nodes {
		byAddr[s.Addr] = s
	}
	var view clusterView
	if err := poll(ctx, "cluster ready", func(ctx context.Context) error {
		v, err := c.settled(ctx, nodes, o.Masters)
		view = v
		return err
	}); err != nil {
		return nil, err
	}
	c.slotOf = make(map[string]int)
	for _, m := range view.masters {
		ms, rs := byAddr[m.addr], byAddr[m.replicas[0]]
		if ms == nil || rs == nil {
			return nil, fmt.Errorf("redisproc: cluster: unknown node in %v", m)
		}
		c.masters = append(c.masters, ms)
		c.replicas = append(c.replicas, rs)
		c.slotOf[m.addr] = m.slots[0][0]
	}
	for _, s := range c.masters {
		c.Addrs = append(c.Addrs, s.Addr)
	}
	for _, s := range c.replicas {
		c.Addrs = append(c.Addrs, s.Addr)
	}
	return c, nil
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// clusterMaster is a master as one node sees it.
type clusterMaster struct {
	addr     string
	id       string
	slots    [][2]int // ranges of slots it serves, inclusive
	replicas []string // addresses of its replicas not deemed failing
}

// serves reports whether the master serves slot.
func (m clusterMaster) serves(slot int) bool {
	for _, r := range m.slots {
		if r[0] <= slot && slot <= r[1] {
			return true
		}
	}
	return false
}

// clusterView is the cluster as one node sees it: the masters that serve
// slots, ordered by their first slot.
type clusterView struct {
	masters []clusterMaster
}

func (v clusterView) String() string {
	var b strings.Builder
	for _, m := range v.masters {
		fmt.Fprintf(&b, "%s%v→%v ", m.addr, m.slots, m.replicas)
	}
	return strings.TrimSpace(b.String())
}

// owner returns the master that serves slot, if any.
func (v clusterView) owner(slot int) (clusterMaster, bool) {
	for _, m := range v.masters {
		if m.serves(slot) {
			return m, true
		}
	}
	return clusterMaster{}, false
}

// nodeClient returns a client of one node (not a cluster client); close it.
func (c *Cluster) nodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Password: c.Password, MaxRetries: -1, PoolSize: 1})
}

// view reads CLUSTER INFO and CLUSTER NODES from the node at addr; it fails
// unless the node reports cluster_state:ok with every slot served.
func (c *Cluster) view(ctx context.Context, addr string) (clusterView, error) {
	rc := c.nodeClient(addr)
	defer rc.Close()
	info, err := rc.ClusterInfo(ctx).Result()
	if err != nil {
		return clusterView{}, fmt.Errorf("%s: CLUSTER INFO: %w", addr, err)
	}
	if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
		f := strings.Fields(info)
		return clusterView{}, fmt.Errorf("%s: cluster not ok: %s", addr, strings.Join(f[:min(len(f), 5)], " "))
	}
	text, err := rc.ClusterNodes(ctx).Result()
	if err != nil {
		return clusterView{}, fmt.Errorf("%s: CLUSTER NODES: %w", addr, err)
	}
	return parseClusterNodes(text)
}

// parseClusterNodes reads the masters that serve slots and their replicas
// not deemed failing from a CLUSTER NODES answer.
func parseClusterNodes(text string) (clusterView, error) {
	type node struct {
		id, addr, flags, master string
		slots                   [][2]int
	}
	var nodes []node
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return clusterView{}, fmt.Errorf("CLUSTER NODES line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		nd := node{id: f[0], addr: addr, flags: f[2], master: f[3]}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				continue // a slot being migrated or imported
			}
			los, his, isRange := strings.Cut(s, "-")
			if !isRange {
				his = los
			}
			lo, err1 := strconv.Atoi(los)
			hi, err2 := strconv.Atoi(his)
			if err1 != nil || err2 != nil {
				return clusterView{}, fmt.Errorf("CLUSTER NODES slots %q", s)
			}
			nd.slots = append(nd.slots, [2]int{lo, hi})
		}
		nodes = append(nodes, nd)
	}
	var v clusterView
	for _, nd := range nodes {
		if len(nd.slots) > 0 && hasFlag(nd.flags, "master") {
			slices.SortFunc(nd.slots, func(a, b [2]int) int { return a[0] - b[0] })
			v.masters = append(v.masters, clusterMaster{addr: nd.addr, id: nd.id, slots: nd.slots})
		}
	}
	for _, nd := range nodes {
		if !hasFlag(nd.flags, "slave") || hasFlag(nd.flags, "fail") || hasFlag(nd.flags, "fail?") {
			continue
		}
		for i := range v.masters {
			if v.masters[i].id == nd.master {
				v.masters[i].replicas = append(v.masters[i].replicas, nd.addr)
			}
		}
	}
	for i := range v.masters {
		slices.Sort(v.masters[i].replicas)
	}
	slices.SortFunc(v.masters, func(a, b clusterMaster) int { return a.slots[0][0] - b.slots[0][0] })
	return v, nil
}

func hasFlag(flags, f string) bool {
	return slices.Contains(strings.Split(flags, ","), f)
}

// settled reports nil once every node is ok, all agree on the masters and
// their replicas, there are want masters with one replica each, and every
// replica's link to its master is up. It returns the agreed view.
func (c *Cluster) settled(ctx context.Context, nodes []*Server, want int) (clusterView, error) {
	var first clusterView
	for i, s := range nodes {
		v, err := c.view(ctx, s.Addr)
		if err != nil {
			return clusterView{}, err
		}
		if i == 0 {
			first = v
		} else if v.String() != first.String() {
			return clusterView{}, fmt.Errorf("nodes disagree: %s sees %s, %s sees %s", nodes[0].Addr, first, s.Addr, v)
		}
	}
	if len(first.masters) != want {
		return clusterView{}, fmt.Errorf("%d masters, want %d: %s", len(first.masters), want, first)
	}
	for _, m := range first.masters {
		if len(m.replicas) != 1 {
			return clusterView{}, fmt.Errorf("master %s has replicas %v, want one", m.addr, m.replicas)
		}
		if err := replicaLinkUp(ctx, m.replicas[0], c.Password); err != nil {
			return clusterView{}, err
		}
	}
	return first, nil
}

// Nodes returns every node of the cluster, in the order of Addrs.
func (c *Cluster) Nodes() []*Server {
	return append(append([]*Server(nil), c.masters...), c.replicas...)
}

// WaitFailover waits until the slots that killedAddr served as a master
// are served by another node: every running node other than killedAddr
// reports cluster_state:ok with all slots served and names the same new
// master for them, and that node says it is a master. It returns the new
// master's address. killedAddr must be a master (one of Masters(), or a
// node an earlier WaitFailover returned); kill it first. The wait ends
// with an error when ctx does.
func (c *Cluster) WaitFailover(ctx context.Context, killedAddr string) (string, error) {
	c.mu.Lock()
	slot, ok := c.slotOf[killedAddr]
	c.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("redisproc: cluster failover: %s is not a master", killedAddr)
	}
	var addr string
	err := poll(ctx, "cluster failover", func(ctx context.Context) error {
		agreed := ""
		for _, s := range c.Nodes() {
			if s.Addr == killedAddr || !s.Running() {
				continue
			}
			v, err := c.view(ctx, s.Addr)
			if err != nil {
				return err
			}
			m, ok := v.owner(slot)
			if !ok {
				return fmt.Errorf("%s: no master for slot %d", s.Addr, slot)
			}
			if m.addr == killedAddr {
				return fmt.Errorf("%s: slot %d still served by %s", s.Addr, slot, killedAddr)
			}
			if agreed != "" && m.addr != agreed {
				return fmt.Errorf("nodes disagree on slot %d: %s and %s", slot, agreed, m.addr)
			}
			agreed = m.addr
		}
		if agreed == "" {
			return errors.New("no running node")
		}
		if err := isMaster(ctx, agreed, c.Password); err != nil {
			return err
		}
		addr = agreed
		return nil
	})
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	delete(c.slotOf, killedAddr)
	c.slotOf[addr] = slot
	c.mu.Unlock()
	return addr, nil
}

// Close stops every node and waits for them, then removes the cluster's
// directory when StartCluster created it. It is safe to call more than
// once.
func (c *Cluster) Close() {
	c.closeOnce.Do(func() {
		stopAll(c.Nodes())
		if c.ownDir {
			_ = os.RemoveAll(c.dir)
		}
	})
}
