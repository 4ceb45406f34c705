package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// infoSample is the shape of redis-server 7's answer to INFO commandstats
// cpu, with CRLF line ends and a subcommand.
const infoSample = "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:2.500000\r\nused_cpu_sys_children:0.000000\r\n" +
	"used_cpu_user_children:0.000000\r\nused_cpu_sys_main_thread:1.200000\r\n\r\n# Commandstats\r\n" +
	"cmdstat_evalsha:calls=700,usec=9000,usec_per_call=12.86,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_config|resetstat:calls=1,usec=20,usec_per_call=20.00,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_hset:calls=250,usec=900,usec_per_call=3.60,rejected_calls=0,failed_calls=0\r\n"

func TestParseNodeInfo(t *testing.T) {
	c, err := parseNodeInfo(infoSample)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"evalsha": 700, "config|resetstat": 1, "hset": 250}
	if len(c.calls) != len(want) {
		t.Errorf("calls %v, want %v", c.calls, want)
	}
	for k, v := range want {
		if c.calls[k] != v {
			t.Errorf("calls[%s] = %d, want %d", k, c.calls[k], v)
		}
	}
	if c.total() != 951 {
		t.Errorf("total %d, want 951", c.total())
	}
	// user + sys of the process, not of its children or main thread only.
	if c.cpu != 3750*time.Millisecond {
		t.Errorf("cpu %v, want 3.75s", c.cpu)
	}
}

func TestParseNodeInfoFailsWithoutCPU(t *testing.T) {
	if _, err := parseNodeInfo("# Commandstats\r\ncmdstat_get:calls=1,usec=1,usec_per_call=1.00\r\n"); err == nil {
		t.Error("no error for an answer without the cpu section")
	}
	if _, err := parseNodeInfo("used_cpu_sys:1\r\nused_cpu_user:1\r\ncmdstat_get:calls=x,usec=1\r\n"); err == nil {
		t.Error("no error for calls that are not a number")
	}
}

func TestNodeCountersSub(t *testing.T) {
	before := nodeCounters{calls: map[string]int64{"get": 10, "set": 5}, cpu: time.Second}
	after := nodeCounters{calls: map[string]int64{"get": 25, "set": 5, "publish": 3}, cpu: 3 * time.Second}
	d := after.sub(before)
	if d.calls["get"] != 15 || d.calls["publish"] != 3 || len(d.calls) != 2 {
		t.Errorf("delta calls %v, want get 15, publish 3 and no set", d.calls)
	}
	if d.total() != 18 || d.cpu != 2*time.Second {
		t.Errorf("delta total %d cpu %v, want 18 and 2s", d.total(), d.cpu)
	}
}

func TestSlots(t *testing.T) {
	rs := [][2]int{{20, 20}, {0, 10}}
	if got := formatSlots(rs); got != "0-10,20" {
		t.Errorf("formatSlots = %q, want 0-10,20", got)
	}
	for slot, want := range map[int]bool{0: true, 10: true, 11: false, 20: true, 21: false} {
		if servesSlot(rs, slot) != want {
			t.Errorf("servesSlot(%d) = %v, want %v", slot, !want, want)
		}
	}
}

// TestClusterReportPrint checks that both runs stand side by side, one
// row per master, and that the single server has no replica figures.
func TestClusterReportPrint(t *testing.T) {
	node := func(role string, cmds, cpu float64) ClusterNode {
		return ClusterNode{Role: role, CommandsPerJob: cmds, CPUPerJobMS: cpu, CPUPercent: 10}
	}
	r := ClusterReport{Clients: 16, Workers: 2, Seconds: 10,
		Single: ClusterRun{Completed: 600, JobsPerSecond: 60, CommandsPerJob: 400, Nodes: []ClusterNode{node("master", 400, 4)}},
		Cluster: ClusterRun{Completed: 300, Failed: 1, JobsPerSecond: 30, CommandsPerJob: 450, ReplicaCommandsPerJob: 300,
			Nodes: []ClusterNode{node("master", 100, 1), node("master", 150, 2), node("master", 200, 3),
				node("replica", 90, 1), node("replica", 100, 1), node("replica", 110, 1)}},
	}
	r.Cluster.Nodes[2].Slots, r.Cluster.Nodes[2].Queues = "10923-16383", []string{"snapshot"}
	var b bytes.Buffer
	r.Print(&b)
	out := b.String()
	for _, want := range []string{
		"| measure | one Redis | Cluster, 3 masters + 3 replicas |",
		"| completed / failed | 600 / 0 | 300 / 1 |",
		"| jobs/s | 60.0 | 30.0 |",
		"| Redis commands/job, masters | 400 | 450 |",
		"|   master 1 | 400 | 100 |",
		"|   master 3 | – | 200 |",
		"| Redis commands/job, replicas (replication) | – | 300 |",
		"|   master 3 | – | 3.00 (10 % of a core) |",
		"3 = slots 10923-16383, asynq queues snapshot",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
