package deploy_test

import (
	"fmt"
	"net"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/timetravel-ai/timetravel/internal/config"
)

const (
	namespace    = "timetravel"
	configPrefix = "timetravel-config-" // + kustomize's content hash
	secretName   = "timetravel-secrets"
	// apiDrain is how long the api lets requests finish after SIGTERM
	// (internal/api.Server.Serve).
	apiDrain = 10 * time.Second
	// shutdownMargin is the least time the kubelet must leave a process
	// after its own shutdown timeout ran out.
	shutdownMargin = 10 * time.Second
)

// forEach runs f on every rendered kustomization, as subtests.
func forEach(t *testing.T, f func(t *testing.T, m *manifest)) {
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) { f(t, render(t, dir)) })
	}
}

// configMap is the generated ConfigMap of the api's and worker's environment.
func configMap(t testing.TB, m *manifest) *corev1.ConfigMap {
	t.Helper()
	var found []*corev1.ConfigMap
	for _, cm := range all[corev1.ConfigMap](m) {
		if strings.HasPrefix(cm.Name, configPrefix) {
			found = append(found, cm)
		}
	}
	if len(found) != 1 {
		t.Fatalf("k8s/%s: want one ConfigMap %s<hash>, have %d", m.dir, configPrefix, len(found))
	}
	return found[0]
}

// secretData is the Secret's data: the rendered one, or where the overlay
// leaves it out (prod, sentinel, cluster), the template in the base, which
// documents the keys the Secret made by hand must have. An overlay on a
// chart's Sentinel group or Cluster (topologies) takes that template
// without REDIS_URL: its Secret has none (docs/deploy.md), since the
// service refuses a second topology, and its containers must not ask for
// one (TestWorkloads checks every key they name is here).
func secretData(t testing.TB, m *manifest) map[string]string {
	t.Helper()
	s := named[corev1.Secret](m, secretName)
	template := s == nil
	if template {
		s = mustNamed[corev1.Secret](t, render(t, "base"), secretName)
	}
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	if _, chart := topologies[m.dir]; chart && template {
		delete(out, "REDIS_URL")
	}
	return out
}

// environment is what the api and worker containers get: the ConfigMap,
// the Secret, and the Secret's keys under the names the containers give
// them (the Sentinel overlay passes REDIS_PASSWORD as
// REDIS_SENTINEL_PASSWORD as well).
func environment(t testing.TB, m *manifest) map[string]string {
	t.Helper()
	env := map[string]string{}
	for k, v := range configMap(t, m).Data {
		env[k] = v
	}
	secret := secretData(t, m)
	for k, v := range secret {
		env[k] = v
	}
	for _, name := range []string{"api", "worker"} {
		for _, e := range container(t, deploymentWorkload(t, m, name), name).Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				if v, ok := secret[e.ValueFrom.SecretKeyRef.Key]; ok {
					env[e.Name] = v
				}
			}
		}
	}
	return env
}

// loadConfig loads the environment with the service's own loader.
func loadConfig(t testing.TB, m *manifest) config.Config {
	t.Helper()
	cfg, err := config.LoadFrom(environment(t, m))
	if err != nil {
		t.Fatalf("k8s/%s: the ConfigMap and Secret do not load: %v", m.dir, err)
	}
	return cfg
}

// envVariables are the variables config.Config reads.
func envVariables() map[string]bool {
	out := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(rt reflect.Type) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			name := strings.Split(f.Tag.Get("env"), ",")[0]
			switch {
			case name == "-":
			case name != "":
				out[name] = true
			case f.Type.Kind() == reflect.Struct:
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeOf(config.Config{}))
	return out
}

// addrPort is the port of a listen address such as ":8080".
func addrPort(t testing.TB, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return int32(n)
}

// workload is a pod template and what owns it.
type workload struct {
	kind, name string
	template   corev1.PodTemplateSpec
}

func workloads(m *manifest) []workload {
	var out []workload
	for _, d := range all[appsv1.Deployment](m) {
		out = append(out, workload{"Deployment", d.Name, d.Spec.Template})
	}
	for _, s := range all[appsv1.StatefulSet](m) {
		out = append(out, workload{"StatefulSet", s.Name, s.Spec.Template})
	}
	return out
}

// selects reports whether sel matches the labels of some workload's pods.
func selects(t testing.TB, m *manifest, sel *metav1.LabelSelector) []workload {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	var out []workload
	for _, w := range workloads(m) {
		if s.Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func container(t testing.TB, w workload, name string) corev1.Container {
	t.Helper()
	for _, c := range w.template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("%s/%s has no container %q", w.kind, w.name, name)
	return corev1.Container{}
}

func deploymentWorkload(t testing.TB, m *manifest, name string) workload {
	t.Helper()
	d := mustNamed[appsv1.Deployment](t, m, name)
	return workload{"Deployment", d.Name, d.Spec.Template}
}

// portNumber resolves a probe's or endpoint's port, by name or number.
func portNumber(t testing.TB, c corev1.Container, port string) int32 {
	t.Helper()
	if n, err := strconv.ParseInt(port, 10, 32); err == nil {
		return int32(n)
	}
	for _, p := range c.Ports {
		if p.Name == port {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, port)
	return 0
}

func TestConfigMapIsAValidConfiguration(t *testing.T) {
	known := envVariables()
	forEach(t, func(t *testing.T, m *manifest) {
		for k := range configMap(t, m).Data {
			if !known[k] {
				t.Errorf("ConfigMap key %s is not a variable that internal/config reads", k)
			}
		}
		for k := range secretData(t, m) {
			if !known[k] && k != "REDIS_PASSWORD" {
				t.Errorf("Secret key %s is neither a variable that internal/config reads nor REDIS_PASSWORD", k)
			}
		}
		loadConfig(t, m)
	})
}

func TestSecretIsConsistent(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		s := secretData(t, m)
		if _, chart := topologies[m.dir]; chart {
			// No REDIS_URL: the chart's servers and KEDA share
			// REDIS_PASSWORD (TestTopologyOverlays checks who reads it).
			for _, k := range []string{"OPENAI_API_KEY", "REDIS_PASSWORD"} {
				if s[k] == "" {
					t.Errorf("Secret %s has no %s", secretName, k)
				}
			}
			return
		}
		for _, k := range []string{"OPENAI_API_KEY", "REDIS_URL", "REDIS_PASSWORD"} {
			if s[k] == "" {
				t.Errorf("Secret %s has no %s", secretName, k)
			}
		}
		opt, err := redis.ParseURL(s["REDIS_URL"])
		if err != nil {
			t.Fatalf("REDIS_URL: %v", err)
		}
		if opt.Password != s["REDIS_PASSWORD"] {
			t.Errorf("the password in REDIS_URL is not REDIS_PASSWORD (the Redis server's and KEDA's)")
		}
	})
}

func TestNamespace(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		ns := mustNamed[corev1.Namespace](t, m, namespace)
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("namespace %s does not enforce the restricted Pod Security Standard", namespace)
		}
		for _, o := range m.objects {
			if o.Kind != "Namespace" && o.Namespace != namespace {
				t.Errorf("%s is in namespace %q, want %q", o, o.Namespace, namespace)
			}
		}
	})
}

// TestWorkloads checks every pod template: probes, requests and limits, a
// locked-down security context, pinned images, and references to
// ConfigMaps and Secret keys that exist.
func TestWorkloads(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		secret := secretData(t, m)
		for _, w := range workloads(m) {
			pod := w.template.Spec
			where := w.kind + "/" + w.name
			if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
				t.Errorf("%s: pod does not set runAsNonRoot", where)
			}
			if pod.SecurityContext == nil || pod.SecurityContext.SeccompProfile == nil || pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s: pod does not use the RuntimeDefault seccomp profile", where)
			}
			if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
				t.Errorf("%s: mounts a service account token it does not need", where)
			}
			if pod.TerminationGracePeriodSeconds == nil {
				t.Errorf("%s: no terminationGracePeriodSeconds", where)
			}
			for _, c := range pod.Containers {
				where := where + " container " + c.Name
				if c.ReadinessProbe == nil || c.LivenessProbe == nil {
					t.Errorf("%s: needs a readiness and a liveness probe", where)
				}
				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					req, hasReq := c.Resources.Requests[r]
					lim, hasLim := c.Resources.Limits[r]
					if !hasReq || !hasLim {
						t.Errorf("%s: needs a %s request and limit", where, r)
					} else if req.Cmp(lim) > 0 {
						t.Errorf("%s: %s request %s over its limit %s", where, r, req.String(), lim.String())
					}
				}
				sc := c.SecurityContext
				if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
					sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
					sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
					t.Errorf("%s: want allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities drop ALL", where)
				}
				ref := c.Image[strings.LastIndex(c.Image, "/")+1:]
				if _, tag, ok := strings.Cut(ref, ":"); !ok || tag == "" || tag == "latest" {
					t.Errorf("%s: image %q has no pinned tag", where, c.Image)
				}
				for _, ef := range c.EnvFrom {
					if ef.ConfigMapRef != nil && named[corev1.ConfigMap](m, ef.ConfigMapRef.Name) == nil {
						t.Errorf("%s: envFrom names ConfigMap %q, which is not rendered", where, ef.ConfigMapRef.Name)
					}
					if ef.SecretRef != nil {
						t.Errorf("%s: takes a whole Secret as environment; name the keys it needs", where)
					}
				}
				for _, e := range c.Env {
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						ref := e.ValueFrom.SecretKeyRef
						if ref.Name != secretName {
							t.Errorf("%s: env %s refers to Secret %q, want %q", where, e.Name, ref.Name, secretName)
						} else if _, ok := secret[ref.Key]; !ok {
							t.Errorf("%s: env %s refers to key %s, which the Secret (template) lacks", where, e.Name, ref.Key)
						}
					}
					if e.Name == "GOMEMLIMIT" {
						limit, err := resource.ParseQuantity(strings.TrimSuffix(strings.TrimSuffix(e.Value, "B"), "i") + "i")
						if err != nil {
							t.Errorf("%s: GOMEMLIMIT %q: %v", where, e.Value, err)
						} else if mem := c.Resources.Limits[corev1.ResourceMemory]; limit.Cmp(mem) >= 0 {
							t.Errorf("%s: GOMEMLIMIT %s is not below the memory limit %s", where, e.Value, mem.String())
						}
					}
				}
			}
		}
	})
}

// TestProbesAndPorts checks that the api and worker are probed on the
// addresses they listen on (API_ADDR, WORKER_ADDR), with readiness on
// /readyz and liveness on /healthz.
func TestProbesAndPorts(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		cfg := loadConfig(t, m)
		for _, c := range []struct {
			deployment string
			addr       string
		}{{"api", cfg.APIAddr}, {"worker", cfg.WorkerAddr}} {
			w := deploymentWorkload(t, m, c.deployment)
			ctr := container(t, w, c.deployment)
			want := addrPort(t, c.addr)
			for _, p := range []struct {
				kind  string
				probe *corev1.Probe
				path  string
			}{{"readiness", ctr.ReadinessProbe, "/readyz"}, {"liveness", ctr.LivenessProbe, "/healthz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil {
					t.Errorf("%s: %s probe is not an HTTP GET", c.deployment, p.kind)
					continue
				}
				if p.probe.HTTPGet.Path != p.path {
					t.Errorf("%s: %s probe path %q, want %q", c.deployment, p.kind, p.probe.HTTPGet.Path, p.path)
				}
				if got := portNumber(t, ctr, p.probe.HTTPGet.Port.String()); got != want {
					t.Errorf("%s: %s probe port %d, but it listens on %s", c.deployment, p.kind, got, c.addr)
				}
			}
		}
	})
}

// TestGracefulShutdown checks that the grace periods leave each process its
// own shutdown time plus a margin: the worker's SHUTDOWN_TIMEOUT for running
// model calls, the api's preStop sleep and 10 s drain.
func TestGracefulShutdown(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		cfg := loadConfig(t, m)
		worker := mustNamed[appsv1.Deployment](t, m, "worker")
		grace := time.Duration(*worker.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
		if grace <= cfg.ShutdownTimeout+shutdownMargin {
			t.Errorf("worker: terminationGracePeriodSeconds %s is not above SHUTDOWN_TIMEOUT %s + %s", grace, cfg.ShutdownTimeout, shutdownMargin)
		}
		if cfg.ShutdownTimeout < cfg.LLM.Timeout {
			t.Errorf("worker: SHUTDOWN_TIMEOUT %s is shorter than LLM_TIMEOUT %s: a stopping worker would abandon calls in flight", cfg.ShutdownTimeout, cfg.LLM.Timeout)
		}

		api := mustNamed[appsv1.Deployment](t, m, "api")
		ctr := container(t, workload{"Deployment", "api", api.Spec.Template}, "api")
		if ctr.Lifecycle == nil || ctr.Lifecycle.PreStop == nil || ctr.Lifecycle.PreStop.Sleep == nil {
			t.Fatal("api: no preStop sleep (endpoints must be removed before SIGTERM)")
		}
		preStop := time.Duration(ctr.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		if preStop < 5*time.Second {
			t.Errorf("api: preStop sleep %s is too short for endpoint removal to reach the ingress", preStop)
		}
		grace = time.Duration(*api.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
		if grace < preStop+apiDrain+5*time.Second {
			t.Errorf("api: terminationGracePeriodSeconds %s is under preStop %s + drain %s + 5s", grace, preStop, apiDrain)
		}
	})
}

// Triggers the worker's ScaledObject must have, by name: <queue>_<list>.
var wantTriggers = []string{"snapshot_pending", "snapshot_active", "aggregate_pending", "aggregate_active", "webhook_pending"}

// wantFormula is the ScaledObject's formula for the given concurrencies
// (autoscaling.yaml explains it).
func wantFormula(snapshot, aggregate, webhook int) string {
	return fmt.Sprintf("max(max((snapshot_pending + snapshot_active) / %d, (aggregate_pending + aggregate_active) / %d), webhook_pending / %d)", snapshot, aggregate, webhook)
}

func TestScaledObject(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		cfg := loadConfig(t, m)
		so := mustNamed[ScaledObject](t, m, "worker")
		spec := so.Spec
		worker := mustNamed[appsv1.Deployment](t, m, spec.ScaleTargetRef.Name)
		if worker.Spec.Replicas != nil {
			t.Error("worker Deployment sets replicas, which KEDA owns: every apply would reset the count")
		}
		if spec.MinReplicaCount == nil || *spec.MinReplicaCount != 1 {
			t.Errorf("minReplicaCount = %v, want 1 (retries and scheduled aggregations need a worker's forwarder)", spec.MinReplicaCount)
		}
		if spec.MaxReplicaCount == nil {
			t.Fatal("no maxReplicaCount")
		}
		if n := int(*spec.MaxReplicaCount); n < 1 || n*cfg.SnapshotConcurrency > cfg.LLM.MaxInFlight {
			t.Errorf("maxReplicaCount %d x SNAPSHOT_CONCURRENCY %d is over LLM_MAX_IN_FLIGHT %d: the extra pods would only wait for provider capacity",
				n, cfg.SnapshotConcurrency, cfg.LLM.MaxInFlight)
		}

		var names []string
		for _, tr := range spec.Triggers {
			names = append(names, tr.Name)
		}
		if !slices.Equal(names, wantTriggers) {
			t.Errorf("triggers %q, want %q", names, wantTriggers)
		}
		if spec.Advanced == nil || spec.Advanced.ScalingModifiers == nil {
			t.Fatal("no scalingModifiers: pending and running tasks would not add up")
		}
		sm := spec.Advanced.ScalingModifiers
		if want := wantFormula(cfg.SnapshotConcurrency, cfg.AggregateConcurrency, cfg.Webhook.Concurrency); sm.Formula != want {
			t.Errorf("formula\n  %s\nwant (from SNAPSHOT_CONCURRENCY, AGGREGATE_CONCURRENCY and WEBHOOK_CONCURRENCY)\n  %s", sm.Formula, want)
		}
		if sm.Target != "1" || sm.MetricType != "AverageValue" {
			t.Errorf("scalingModifiers target %q metricType %q, want 1 AverageValue (the formula counts pods)", sm.Target, sm.MetricType)
		}
		idents := regexp.MustCompile(`[a-z_]+`).FindAllString(sm.Formula, -1)
		for _, id := range idents {
			if id != "max" && !slices.Contains(names, id) {
				t.Errorf("formula uses %q, which no trigger is named", id)
			}
		}
		for _, n := range names {
			if !slices.Contains(idents, n) {
				t.Errorf("trigger %s is not in the formula", n)
			}
		}

		// Where KEDA reads, and with what password: a chart's Sentinel
		// group or Cluster (topology_test.go), or one server.
		if topo, chart := topologies[m.dir]; chart {
			checkChartTriggers(t, m, cfg, topo, spec.Triggers)
			return
		}
		opt, err := redis.ParseURL(secretData(t, m)["REDIS_URL"])
		if err != nil {
			t.Fatal(err)
		}
		redisSvc := named[corev1.Service](m, "redis")
		for _, tr := range spec.Triggers {
			md := tr.Metadata
			if tr.Type != "redis" {
				t.Errorf("%s: type %q, but REDIS_URL names one server (KEDA's redis scaler)", tr.Name, tr.Type)
			}
			if n, err := strconv.Atoi(md["listLength"]); err != nil || n < 1 {
				t.Errorf("%s: listLength %q", tr.Name, md["listLength"])
			}
			if md["databaseIndex"] != strconv.Itoa(opt.DB) {
				t.Errorf("%s: databaseIndex %q, but REDIS_URL uses db %d", tr.Name, md["databaseIndex"], opt.DB)
			}
			if redisSvc != nil {
				want := fmt.Sprintf("redis.%s.svc.cluster.local:%d", namespace, redisSvc.Spec.Ports[0].Port)
				if md["address"] != want {
					t.Errorf("%s: address %q, want the in-cluster Redis %q (KEDA runs in another namespace)", tr.Name, md["address"], want)
				}
			} else {
				if strings.Contains(md["address"], ".svc.") || md["address"] == "" {
					t.Errorf("%s: address %q, but there is no in-cluster Redis", tr.Name, md["address"])
				}
				if opt.TLSConfig != nil && md["enableTLS"] != "true" {
					t.Errorf("%s: REDIS_URL uses TLS but the trigger does not", tr.Name)
				}
			}
			if tr.AuthenticationRef == nil {
				t.Errorf("%s: no authenticationRef (the Redis password)", tr.Name)
				continue
			}
			ta := mustNamed[TriggerAuthentication](t, m, tr.AuthenticationRef.Name)
			secret := secretData(t, m)
			var password bool
			for _, ref := range ta.Spec.SecretTargetRef {
				if ref.Name != secretName {
					t.Errorf("TriggerAuthentication %s: Secret %q, want %q", ta.Name, ref.Name, secretName)
				} else if _, ok := secret[ref.Key]; !ok {
					t.Errorf("TriggerAuthentication %s: the Secret (template) has no key %s", ta.Name, ref.Key)
				}
				password = password || ref.Parameter == "password"
			}
			if !password {
				t.Errorf("TriggerAuthentication %s gives no password", ta.Name)
			}
		}
	})
}

func TestAPIAutoscaling(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		hpa := mustNamed[autoscalingv2.HorizontalPodAutoscaler](t, m, "api")
		ref := hpa.Spec.ScaleTargetRef
		api := named[appsv1.Deployment](m, ref.Name)
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || api == nil || ref.Name != "api" {
			t.Fatalf("HPA api scales %s %s/%s, want the api Deployment", ref.APIVersion, ref.Kind, ref.Name)
		}
		if api.Spec.Replicas != nil {
			t.Error("api Deployment sets replicas, which the HPA owns")
		}
		if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
			t.Errorf("HPA api: minReplicas %v maxReplicas %d; want at least 2 replicas", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
		}
		var cpu bool
		for _, mt := range hpa.Spec.Metrics {
			cpu = cpu || (mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil &&
				mt.Resource.Name == corev1.ResourceCPU && mt.Resource.Target.Type == autoscalingv2.UtilizationMetricType)
		}
		if !cpu {
			t.Error("HPA api does not scale on CPU utilization")
		}
	})
}

// TestDisruptionBudgets checks that each budget selects pods and can be
// met: a budget that requires as many pods as the autoscaler's minimum
// blocks every node drain.
func TestDisruptionBudgets(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		pdbs := all[policyv1.PodDisruptionBudget](m)
		for _, want := range []string{"api", "worker"} {
			if named[policyv1.PodDisruptionBudget](m, want) == nil {
				t.Errorf("no PodDisruptionBudget %s", want)
			}
		}
		for _, pdb := range pdbs {
			ws := selects(t, m, pdb.Spec.Selector)
			if len(ws) != 1 {
				t.Errorf("PodDisruptionBudget %s selects %d workloads, want 1", pdb.Name, len(ws))
				continue
			}
			if pdb.Spec.MinAvailable != nil {
				hpa := named[autoscalingv2.HorizontalPodAutoscaler](m, ws[0].name)
				if hpa == nil || hpa.Spec.MinReplicas == nil || pdb.Spec.MinAvailable.IntValue() >= int(*hpa.Spec.MinReplicas) {
					t.Errorf("PodDisruptionBudget %s: minAvailable %s leaves no pod of %s evictable", pdb.Name, pdb.Spec.MinAvailable, ws[0].name)
				}
			}
			if pdb.Spec.MaxUnavailable != nil && pdb.Spec.MaxUnavailable.IntValue() < 1 {
				t.Errorf("PodDisruptionBudget %s: maxUnavailable %s blocks node drains", pdb.Name, pdb.Spec.MaxUnavailable)
			}
		}
	})
}

// publicPaths are the paths the Ingress routes, with their path type.
var publicPaths = map[string]networkingv1.PathType{
	"/api": networkingv1.PathTypePrefix, "/": networkingv1.PathTypeExact,
	"/jobs": networkingv1.PathTypePrefix, "/assets": networkingv1.PathTypePrefix,
	"/openapi.json": networkingv1.PathTypeExact, "/docs": networkingv1.PathTypePrefix,
}

func TestIngressKeepsSSEAlive(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		ing := mustNamed[networkingv1.Ingress](t, m, "api")
		for k, v := range map[string]string{
			"alb.ingress.kubernetes.io/load-balancer-attributes": "idle_timeout.timeout_seconds=300",
			"nginx.ingress.kubernetes.io/proxy-read-timeout":     "3600",
			"nginx.ingress.kubernetes.io/proxy-send-timeout":     "3600",
			"nginx.ingress.kubernetes.io/proxy-buffering":        "off",
		} {
			if ing.Annotations[k] != v {
				t.Errorf("Ingress annotation %s = %q, want %q", k, ing.Annotations[k], v)
			}
		}
		cfg := loadConfig(t, m)
		idle := 300 * time.Second
		if cfg.SSEHeartbeat >= idle/2 {
			t.Errorf("SSE_HEARTBEAT %s is too close to the load balancer's idle timeout %s", cfg.SSEHeartbeat, idle)
		}
		for _, rule := range ing.Spec.Rules {
			for _, p := range rule.HTTP.Paths {
				// The api, the web page (its root exactly, its job links
				// and assets) and the contract leave the cluster; /healthz,
				// /readyz and /metrics never do (so no Prefix "/").
				want, public := publicPaths[p.Path]
				if !public || p.PathType == nil || *p.PathType != want {
					t.Errorf("Ingress routes %q (%v); only %v should leave the cluster", p.Path, p.PathType, publicPaths)
				}
				b := p.Backend.Service
				svc := named[corev1.Service](m, b.Name)
				if svc == nil {
					t.Errorf("Ingress backend Service %q is not rendered", b.Name)
					continue
				}
				if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == b.Port.Name }) {
					t.Errorf("Service %s has no port named %q", b.Name, b.Port.Name)
				}
			}
		}
	})
}

var privateRanges = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}

func TestNetworkPolicies(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		nps := all[networkingv1.NetworkPolicy](m)
		deny := named[networkingv1.NetworkPolicy](m, "default-deny")
		if deny == nil || len(deny.Spec.PodSelector.MatchLabels)+len(deny.Spec.PodSelector.MatchExpressions) != 0 ||
			len(deny.Spec.Ingress)+len(deny.Spec.Egress) != 0 ||
			!slices.Equal(deny.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
			t.Error("no default-deny policy: empty pod selector, Ingress and Egress, no rules")
		}
		var https bool
		for _, np := range nps {
			if len(selects(t, m, &np.Spec.PodSelector)) == 0 && !selectsChartPods(t, m, &np.Spec.PodSelector) {
				t.Errorf("NetworkPolicy %s selects no pods", np.Name)
			}
			for _, rule := range np.Spec.Egress {
				for _, peer := range rule.To {
					if peer.IPBlock == nil || (peer.IPBlock.CIDR != "0.0.0.0/0" && peer.IPBlock.CIDR != "::/0") {
						continue
					}
					for _, r := range privateRanges {
						if !slices.Contains(peer.IPBlock.Except, r) {
							t.Errorf("NetworkPolicy %s opens egress to %s without excluding %s", np.Name, peer.IPBlock.CIDR, r)
						}
					}
					if len(rule.Ports) == 0 {
						t.Errorf("NetworkPolicy %s opens egress to %s on every port", np.Name, peer.IPBlock.CIDR)
					}
					for _, p := range rule.Ports {
						if p.Port == nil || p.Port.IntValue() != 443 {
							t.Errorf("NetworkPolicy %s opens egress to %s on port %v, want only 443", np.Name, peer.IPBlock.CIDR, p.Port)
						}
					}
					for _, w := range selects(t, m, &np.Spec.PodSelector) {
						https = https || w.name == "worker"
					}
				}
			}
		}
		if !https {
			t.Error("the worker has no HTTPS egress to public addresses (LLM provider, webhooks)")
		}
		hasRedis := named[appsv1.StatefulSet](m, "redis") != nil
		for _, np := range nps {
			for _, rule := range np.Spec.Egress {
				for _, peer := range rule.To {
					if peer.PodSelector != nil && peer.PodSelector.MatchLabels["app.kubernetes.io/name"] == "timetravel-redis" && !hasRedis {
						t.Errorf("NetworkPolicy %s allows egress to in-cluster Redis pods, but there is no in-cluster Redis", np.Name)
					}
				}
			}
		}
		if hasRedis {
			r := mustNamed[networkingv1.NetworkPolicy](t, m, "redis")
			var keda bool
			for _, rule := range r.Spec.Ingress {
				for _, peer := range rule.From {
					keda = keda || (peer.NamespaceSelector != nil && peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "keda")
				}
			}
			if !keda {
				t.Error("NetworkPolicy redis does not let the KEDA operator read the queue lengths")
			}
		}
	})
}

func TestMonitoring(t *testing.T) {
	forEach(t, func(t *testing.T, m *manifest) {
		jobs := map[string]bool{}

		sm := mustNamed[ServiceMonitor](t, m, "api")
		s, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		var svc *corev1.Service
		for _, x := range all[corev1.Service](m) {
			if s.Matches(labels.Set(x.Labels)) {
				if svc != nil {
					t.Errorf("ServiceMonitor api selects Services %s and %s", svc.Name, x.Name)
				}
				svc = x
			}
		}
		if svc == nil || svc.Name != "api" {
			t.Fatalf("ServiceMonitor api selects %v, want Service api", svc)
		}
		for _, e := range sm.Spec.Endpoints {
			if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) || e.Path != "/metrics" {
				t.Errorf("ServiceMonitor api scrapes port %q path %q; Service api has no such port or the path is not /metrics", e.Port, e.Path)
			}
		}
		jobs[svc.Labels[sm.Spec.JobLabel]] = true

		pm := mustNamed[PodMonitor](t, m, "worker")
		ws := selects(t, m, &pm.Spec.Selector)
		if len(ws) != 1 || ws[0].name != "worker" {
			t.Fatalf("PodMonitor worker selects %v, want the worker pods", ws)
		}
		ctr := container(t, ws[0], "worker")
		for _, e := range pm.Spec.PodMetricsEndpoints {
			if portNumber(t, ctr, e.Port) != addrPort(t, loadConfig(t, m).WorkerAddr) || e.Path != "/metrics" {
				t.Errorf("PodMonitor worker scrapes port %q path %q, not WORKER_ADDR's /metrics", e.Port, e.Path)
			}
		}
		jobs[ws[0].template.Labels[pm.Spec.JobLabel]] = true

		checkAlerts(t, m, jobs)
	})
}

// knownMetrics are the metric names alerts may use: the worker's asynq queue
// collector, the service's histograms, Prometheus' up.
var knownMetrics = []string{
	"up",
	"asynq_queue_tasks", "asynq_queue_size", "asynq_queue_latency_seconds",
	"timetravel_job_duration_seconds_bucket", "timetravel_stage_duration_seconds_bucket",
}

func checkAlerts(t *testing.T, m *manifest, jobs map[string]bool) {
	t.Helper()
	pr := mustNamed[PrometheusRule](t, m, "timetravel")
	metricRef := regexp.MustCompile(`\b([a-z_]+)\s*[{\[]`)
	jobRef := regexp.MustCompile(`job="([^"]+)"`)
	rules := map[string]Rule{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			rules[r.Alert] = r
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("alert %s: severity %q", r.Alert, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("alert %s: no summary", r.Alert)
			}
			for _, mm := range metricRef.FindAllStringSubmatch(r.Expr, -1) {
				if name := mm[1]; !slices.Contains(knownMetrics, name) && name != "by" {
					t.Errorf("alert %s uses metric %q, which nothing exports", r.Alert, name)
				}
			}
			for _, jm := range jobRef.FindAllStringSubmatch(r.Expr, -1) {
				if !jobs[jm[1]] {
					t.Errorf("alert %s: job %q is not a job label the monitors give (%v)", r.Alert, jm[1], jobs)
				}
			}
		}
	}
	for _, w := range []struct{ alert, severity, expr string }{
		{"TimetravelJobDurationHigh", "warning", "timetravel_job_duration_seconds_bucket[5m]))) > 45"},
		{"TimetravelJobDurationCritical", "critical", "timetravel_job_duration_seconds_bucket[5m]))) > 90"},
		{"TimetravelSnapshotStageSlow", "warning", `timetravel_stage_duration_seconds_bucket{stage="snapshot"}[5m]))) > 30`},
		{"TimetravelQueueBacklog", "warning", `asynq_queue_tasks{state="pending"}`},
		{"TimetravelQueueLatencyHigh", "warning", "asynq_queue_latency_seconds"},
		{"TimetravelQueueSizeHigh", "warning", "asynq_queue_size"},
		{"TimetravelWorkerDown", "critical", `up{job="timetravel-worker"}`},
	} {
		r, ok := rules[w.alert]
		if !ok {
			t.Errorf("no alert %s", w.alert)
			continue
		}
		if r.Labels["severity"] != w.severity || !strings.Contains(r.Expr, w.expr) {
			t.Errorf("alert %s: severity %q expr %q; want %s and %q", w.alert, r.Labels["severity"], r.Expr, w.severity, w.expr)
		}
	}
}

// TestProdUsesManagedRedis checks what the prod overlay removes: the
// in-cluster Redis and the Secret template.
func TestProdUsesManagedRedis(t *testing.T) {
	m := render(t, "overlays/prod")
	if ss := all[appsv1.StatefulSet](m); len(ss) != 0 {
		t.Errorf("prod renders %d StatefulSets; Redis is managed", len(ss))
	}
	if named[corev1.Service](m, "redis") != nil || named[networkingv1.NetworkPolicy](m, "redis") != nil {
		t.Error("prod renders the in-cluster Redis' Service or NetworkPolicy")
	}
	if s := all[corev1.Secret](m); len(s) != 0 {
		t.Error("prod renders a Secret: `kubectl apply -k` would overwrite the real credentials with placeholders")
	}
	for _, dir := range []string{"base", "overlays/dev"} {
		if named[appsv1.StatefulSet](render(t, dir), "redis") == nil {
			t.Errorf("k8s/%s has no Redis StatefulSet", dir)
		}
	}
}

// TestRedisPersistence checks the in-cluster Redis: append-only file on a
// persistent volume, no eviction (asynq's data must not be evicted), and a
// password from the Secret.
func TestRedisPersistence(t *testing.T) {
	for _, dir := range []string{"base", "overlays/dev"} {
		t.Run(dir, func(t *testing.T) {
			m := render(t, dir)
			ss := mustNamed[appsv1.StatefulSet](t, m, "redis")
			c := container(t, workload{"StatefulSet", ss.Name, ss.Spec.Template}, "redis")
			args := " " + strings.Join(c.Args, " ") + " "
			for _, want := range []string{" --appendonly yes ", " --maxmemory-policy noeviction ", " --requirepass $(REDIS_PASSWORD) ", " --dir /data "} {
				if !strings.Contains(args, want) {
					t.Errorf("redis args %q lack %q", c.Args, strings.TrimSpace(want))
				}
			}
			if len(ss.Spec.VolumeClaimTemplates) != 1 || ss.Spec.VolumeClaimTemplates[0].Name != "data" {
				t.Fatal("redis has no volume claim template data")
			}
			if !slices.ContainsFunc(c.VolumeMounts, func(v corev1.VolumeMount) bool { return v.Name == "data" && v.MountPath == "/data" }) {
				t.Error("redis does not mount its volume on /data")
			}
			if ss.Spec.ServiceName != "redis" || named[corev1.Service](m, "redis") == nil {
				t.Error("redis StatefulSet has no governing Service redis")
			}
		})
	}
}
