package deploy_test

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/timetravel-ai/timetravel/internal/config"
)

// chartTopology is an overlay whose Redis is a Helm chart the operator
// installs (docs/deploy.md, "Redis topologies"), not an object it renders:
// a Sentinel group of bitnami/redis or a bitnami/redis-cluster. What the
// chart creates is written here from the chart's templates (pinned version
// in the docs), since no Helm runs in the tests: the names under its
// headless Service, its pods' labels and ports.
type chartTopology struct {
	topology config.RedisTopology
	// chart is the Helm chart and its release name, for messages.
	chart string
	// addrs are the addresses the service must be configured with, in
	// order: the chart's per-pod names under its headless Service.
	addrs []string
	// master is the Sentinel master name (the chart's sentinel.masterSet).
	master string
	// podLabels select the chart's Redis pods (the labels it gives them).
	podLabels map[string]string
	// clientPorts are what the api, the worker and KEDA connect to;
	// peerPorts what the chart's pods connect to each other on.
	clientPorts, peerPorts []int32
	// triggerType is KEDA's scaler for the topology.
	triggerType string
	// secretEnv are the variables the api and the worker must take from
	// the Secret, by the key they take them from.
	secretEnv map[string]string
}

// podNames are the addresses of a StatefulSet's pods under its headless
// Service: <set>-<i>.<service>:<port>.
func podNames(set, service string, n, port int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s-%d.%s:%d", set, i, service, port))
	}
	return out
}

// topologies are the overlays on a chart's Redis, by directory. Every
// other kustomization runs on one server (REDIS_URL).
var topologies = map[string]chartTopology{
	// bitnami/redis, release "redis", sentinel.enabled=true: StatefulSet
	// redis-node (three pods, each a Redis and a sentinel), headless
	// Service redis-headless, master set mymaster; one password for the
	// servers and the sentinels (auth.sentinel).
	"overlays/sentinel": {
		topology:    config.RedisSentinel,
		chart:       "bitnami/redis (release redis, sentinel.enabled=true)",
		addrs:       podNames("redis-node", "redis-headless", 3, 26379),
		master:      "mymaster",
		podLabels:   map[string]string{"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "redis", "app.kubernetes.io/component": "node"},
		clientPorts: []int32{6379, 26379},
		peerPorts:   []int32{6379, 26379},
		triggerType: "redis-sentinel",
		secretEnv:   map[string]string{"REDIS_PASSWORD": "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD": "REDIS_PASSWORD"},
	},
	// bitnami/redis-cluster, release "redis-cluster": StatefulSet
	// redis-cluster (six pods, three masters with a replica each),
	// headless Service redis-cluster-headless, the bus on 16379.
	"overlays/cluster": {
		topology:    config.RedisCluster,
		chart:       "bitnami/redis-cluster (release redis-cluster)",
		addrs:       podNames("redis-cluster", "redis-cluster-headless", 6, 6379),
		podLabels:   map[string]string{"app.kubernetes.io/name": "redis-cluster", "app.kubernetes.io/instance": "redis-cluster"},
		clientPorts: []int32{6379},
		peerPorts:   []int32{6379, 16379},
		triggerType: "redis-cluster",
		secretEnv:   map[string]string{"REDIS_PASSWORD": "REDIS_PASSWORD"},
	},
}

// singleServerOverlays are the overlays on one Redis server (REDIS_URL):
// the base's in the cluster (dev) or a managed one (prod, and aws on top of
// it).
var singleServerOverlays = []string{"overlays/dev", "overlays/prod", "overlays/aws"}

// selectsChartPods reports whether sel matches the pods of the overlay's
// chart, which are not rendered.
func selectsChartPods(t testing.TB, m *manifest, sel *metav1.LabelSelector) bool {
	t.Helper()
	topo, ok := topologies[m.dir]
	if !ok {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return s.Matches(labels.Set(topo.podLabels))
}

// TestTopologyOverlays checks each overlay on a chart's Redis: nothing of
// the base's single Redis is left, the configuration loads and names the
// chart's servers by the topology's variables, and the api and the worker
// take the password from the Secret key the chart reads too.
func TestTopologyOverlays(t *testing.T) {
	for _, dir := range kustomizations {
		if !strings.HasPrefix(dir, "overlays/") {
			continue
		}
		if _, ok := topologies[dir]; !ok && !slices.Contains(singleServerOverlays, dir) {
			t.Errorf("k8s/%s: neither in topologies nor in singleServerOverlays; say which Redis it runs on", dir)
		}
	}
	for dir, topo := range topologies {
		t.Run(dir, func(t *testing.T) {
			if !slices.Contains(kustomizations, dir) {
				t.Fatalf("k8s/%s is not in kustomizations", dir)
			}
			m := render(t, dir)

			// No base Redis: no StatefulSet, no Service or policy of
			// its, nothing naming its pods, no Secret template.
			if ss := all[appsv1.StatefulSet](m); len(ss) != 0 {
				t.Errorf("renders %d StatefulSets; Redis is the chart's", len(ss))
			}
			if named[corev1.Service](m, "redis") != nil || named[networkingv1.NetworkPolicy](m, "redis") != nil {
				t.Error("renders the base Redis' Service or NetworkPolicy")
			}
			if len(all[corev1.Secret](m)) != 0 {
				t.Error("renders a Secret: `kubectl apply -k` would overwrite the password the chart's servers started with")
			}
			for _, o := range m.objects {
				b, err := json.Marshal(o.Obj)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(b), "timetravel-redis") {
					t.Errorf("%s names the base Redis' pods (timetravel-redis)", o)
				}
			}

			// The configuration: the topology's variables, the chart's
			// addresses, the Secret's password.
			cfg := loadConfig(t, m)
			r := cfg.Redis
			if r.Topology() != topo.topology {
				t.Fatalf("configured topology %s, want %s", r.Topology(), topo.topology)
			}
			if !slices.Equal(r.Addrs(), topo.addrs) {
				t.Errorf("addresses %q, want the pods of %s %q", r.Addrs(), topo.chart, topo.addrs)
			}
			if r.SentinelMaster != topo.master {
				t.Errorf("REDIS_SENTINEL_MASTER %q, want %q", r.SentinelMaster, topo.master)
			}
			secret := secretData(t, m)
			if r.ServerPassword == "" || r.ServerPassword != secret["REDIS_PASSWORD"] {
				t.Errorf("REDIS_PASSWORD %q is not the Secret's REDIS_PASSWORD (the chart's existing-secret key)", r.ServerPassword)
			}
			if topo.topology == config.RedisSentinel && r.SentinelPassword != secret["REDIS_PASSWORD"] {
				t.Errorf("REDIS_SENTINEL_PASSWORD %q is not REDIS_PASSWORD: the chart's sentinels require the servers' password", r.SentinelPassword)
			}
			for _, name := range []string{"api", "worker"} {
				c := container(t, deploymentWorkload(t, m, name), name)
				got := map[string]string{}
				for _, e := range c.Env {
					if e.Name == "REDIS_URL" {
						t.Errorf("%s: sets REDIS_URL, which the service refuses next to a %s", name, topo.topology)
					}
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						if e.ValueFrom.SecretKeyRef.Key == "REDIS_URL" {
							t.Errorf("%s: env %s takes the Secret's REDIS_URL, which this topology's Secret has not", name, e.Name)
						}
						got[e.Name] = e.ValueFrom.SecretKeyRef.Key
					}
				}
				for env, key := range topo.secretEnv {
					if got[env] != key {
						t.Errorf("%s: env %s from Secret key %q, want %q", name, env, got[env], key)
					}
				}
			}
		})
	}
}

// fqdn turns a host:port inside the namespace into the name KEDA (in its
// own namespace) resolves.
func fqdn(t testing.TB, addr string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return net.JoinHostPort(host+"."+namespace+".svc.cluster.local", port)
}

// checkChartTriggers checks a topology overlay's KEDA triggers: KEDA's
// scaler for the topology, the service's own addresses (fully qualified),
// master name, database and TLS, and the Secret's password for the servers
// and, with Sentinel, for the sentinels.
func checkChartTriggers(t *testing.T, m *manifest, cfg config.Config, topo chartTopology, triggers []Trigger) {
	t.Helper()
	r := cfg.Redis
	var want []string
	for _, a := range r.Addrs() {
		want = append(want, fqdn(t, a))
	}
	for _, tr := range triggers {
		md := tr.Metadata
		if tr.Type != topo.triggerType {
			t.Errorf("%s: type %q, but the service runs on %s: want KEDA's %s scaler", tr.Name, tr.Type, topo.topology, topo.triggerType)
		}
		if n, err := strconv.Atoi(md["listLength"]); err != nil || n < 1 {
			t.Errorf("%s: listLength %q", tr.Name, md["listLength"])
		}
		if got := strings.Split(md["addresses"], ","); !slices.Equal(got, want) {
			t.Errorf("%s: addresses %q, want the service's %q, fully qualified (KEDA runs in another namespace)", tr.Name, got, want)
		}
		if tr.Type == "redis-sentinel" {
			if md["sentinelMaster"] != r.SentinelMaster {
				t.Errorf("%s: sentinelMaster %q, want REDIS_SENTINEL_MASTER %q", tr.Name, md["sentinelMaster"], r.SentinelMaster)
			}
			if md["databaseIndex"] != strconv.Itoa(r.DB) {
				t.Errorf("%s: databaseIndex %q, but REDIS_DB is %d", tr.Name, md["databaseIndex"], r.DB)
			}
		}
		if tr.AuthenticationRef == nil {
			t.Errorf("%s: no authenticationRef (the Redis password)", tr.Name)
			continue
		}
		ta := mustNamed[TriggerAuthentication](t, m, tr.AuthenticationRef.Name)
		params := map[string]string{}
		for _, ref := range ta.Spec.SecretTargetRef {
			if ref.Name != secretName {
				t.Errorf("TriggerAuthentication %s: Secret %q, want %q", ta.Name, ref.Name, secretName)
			}
			params[ref.Parameter] = ref.Key
		}
		// TLS: enableTLS on the trigger, or (for a private CA) the
		// TriggerAuthentication's tls parameter, which KEDA takes instead.
		_, authTLS := params["tls"]
		if tlsOn := md["enableTLS"] == "true" || authTLS; tlsOn != r.TLS {
			t.Errorf("%s: TLS %v (enableTLS %q, TriggerAuthentication tls %v), but REDIS_TLS is %v", tr.Name, tlsOn, md["enableTLS"], authTLS, r.TLS)
		}
		if params["password"] != topo.secretEnv["REDIS_PASSWORD"] {
			t.Errorf("TriggerAuthentication %s: password from key %q, but the service's REDIS_PASSWORD is key %q", ta.Name, params["password"], topo.secretEnv["REDIS_PASSWORD"])
		}
		if key, ok := topo.secretEnv["REDIS_SENTINEL_PASSWORD"]; ok && params["sentinelPassword"] != key {
			t.Errorf("TriggerAuthentication %s: sentinelPassword from key %q, but the service's REDIS_SENTINEL_PASSWORD is key %q", ta.Name, params["sentinelPassword"], key)
		}
	}
}

// endpoint is one side of a connection: a pod's namespace and labels.
type endpoint struct {
	name, namespace string
	labels          map[string]string
}

var kedaOperator = endpoint{"the KEDA operator", "keda", map[string]string{"app.kubernetes.io/name": "keda-operator"}}

func matches(t testing.TB, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return s.Matches(labels.Set(set))
}

// peerMatches reports whether a policy's peer (in the policy's namespace)
// is e. IP blocks name no pod.
func peerMatches(t testing.TB, peer networkingv1.NetworkPolicyPeer, e endpoint) bool {
	if peer.IPBlock != nil {
		return false
	}
	if peer.NamespaceSelector != nil {
		if !matches(t, peer.NamespaceSelector, map[string]string{"kubernetes.io/metadata.name": e.namespace}) {
			return false
		}
	} else if e.namespace != namespace {
		return false
	}
	return peer.PodSelector == nil || matches(t, peer.PodSelector, e.labels)
}

func portMatches(ports []networkingv1.NetworkPolicyPort, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP || p.Port == nil || p.Port.Type != intstr.Int {
			continue
		}
		hi := p.Port.IntVal
		if p.EndPort != nil {
			hi = *p.EndPort
		}
		if port >= p.Port.IntVal && port <= hi {
			return true
		}
	}
	return false
}

func policyTypes(np *networkingv1.NetworkPolicy) []networkingv1.PolicyType {
	if len(np.Spec.PolicyTypes) > 0 {
		return np.Spec.PolicyTypes
	}
	out := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	if len(np.Spec.Egress) > 0 {
		out = append(out, networkingv1.PolicyTypeEgress)
	}
	return out
}

// allows reports whether the rendered policies let from open a TCP
// connection to to on port, as NetworkPolicy semantics decide it: a pod
// that some policy of a direction selects is isolated in that direction,
// and then needs a rule of such a policy that admits the peer and port.
// Only the side in this namespace is decided here; the other is its own
// namespace's business (the KEDA operator's egress).
func allows(t testing.TB, m *manifest, from, to endpoint, port int32) (egress, ingress bool) {
	t.Helper()
	decide := func(self, peer endpoint, dir networkingv1.PolicyType) bool {
		if self.namespace != namespace {
			return true
		}
		isolated := false
		for _, np := range all[networkingv1.NetworkPolicy](m) {
			if !slices.Contains(policyTypes(np), dir) || !matches(t, &np.Spec.PodSelector, self.labels) {
				continue
			}
			isolated = true
			if dir == networkingv1.PolicyTypeEgress {
				for _, rule := range np.Spec.Egress {
					if portMatches(rule.Ports, port) && (len(rule.To) == 0 || slices.ContainsFunc(rule.To, func(p networkingv1.NetworkPolicyPeer) bool { return peerMatches(t, p, peer) })) {
						return true
					}
				}
			} else {
				for _, rule := range np.Spec.Ingress {
					if portMatches(rule.Ports, port) && (len(rule.From) == 0 || slices.ContainsFunc(rule.From, func(p networkingv1.NetworkPolicyPeer) bool { return peerMatches(t, p, peer) })) {
						return true
					}
				}
			}
		}
		return !isolated
	}
	return decide(from, to, networkingv1.PolicyTypeEgress), decide(to, from, networkingv1.PolicyTypeIngress)
}

// TestRedisNetworkPaths checks, by evaluating the rendered policies, that
// the api, the worker and the KEDA operator reach Redis on the ports they
// need and on no other, and that a chart's pods reach each other: the
// in-cluster Redis of base and dev on 6379; the Sentinel group on 6379 and
// 26379; the Cluster on 6379, with its bus (16379) open between its nodes
// only.
func TestRedisNetworkPaths(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		var servers endpoint
		var clientPorts, peerPorts []int32
		if topo, ok := topologies[m.dir]; ok {
			servers = endpoint{topo.chart, namespace, topo.podLabels}
			clientPorts, peerPorts = topo.clientPorts, topo.peerPorts
		} else if ss := named[appsv1.StatefulSet](m, "redis"); ss != nil {
			servers = endpoint{"StatefulSet/redis", namespace, ss.Spec.Template.Labels}
			clientPorts = []int32{6379}
		} else {
			t.Skip("Redis is outside the cluster (an IP block; TestNetworkPolicies)")
		}
		clients := []endpoint{kedaOperator}
		for _, name := range []string{"api", "worker"} {
			w := deploymentWorkload(t, m, name)
			clients = append(clients, endpoint{"Deployment/" + name, namespace, w.template.Labels})
		}
		// Ports no client may use: the peers' own (the cluster bus) and
		// one nothing listens on, so that a rule open on every port shows.
		closed := []int32{6380}
		for _, p := range peerPorts {
			if !slices.Contains(clientPorts, p) {
				closed = append(closed, p)
			}
		}
		for _, c := range clients {
			for _, p := range clientPorts {
				if eg, in := allows(t, m, c, servers, p); !eg || !in {
					t.Errorf("%s -> %s port %d: egress allowed %v, ingress allowed %v; want both", c.name, servers.name, p, eg, in)
				}
			}
			for _, p := range closed {
				if eg, in := allows(t, m, c, servers, p); eg && in {
					t.Errorf("%s -> %s port %d is allowed; only %v should be", c.name, servers.name, p, clientPorts)
				}
			}
		}
		for _, p := range peerPorts {
			if eg, in := allows(t, m, servers, servers, p); !eg || !in {
				t.Errorf("%s -> its own pods port %d: egress allowed %v, ingress allowed %v; want both", servers.name, p, eg, in)
			}
		}
	})
}
