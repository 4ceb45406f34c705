package deploy_test

import (
	"encoding/json"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/timetravel-ai/timetravel/internal/tracing"
)

const (
	awsOverlay = "overlays/aws"
	// collectorName is the collector's Deployment, Service and service
	// account.
	collectorName = "otel-collector"
	// collectorConfigPrefix + kustomize's content hash is the collector's
	// generated ConfigMap; collectorConfigKey its file in it.
	collectorConfigPrefix = "otel-collector-config-"
	collectorConfigKey    = "collector.yaml"
	// albIdleTimeout is the load balancer's idle timeout the overlay must
	// set: SSE streams wait on a job for up to JOB_DEADLINE and more.
	albIdleTimeout = 300 * time.Second
)

// roleARN is an IAM role's ARN, as the eks.amazonaws.com/role-arn annotation
// of IRSA takes it.
var roleARN = regexp.MustCompile(`^arn:aws:iam::[0-9]{12}:role/[\w+=,.@/-]+$`)

// TestAWSOverlay checks what the AWS overlay adds to prod: the ALB Ingress,
// the IRSA service accounts, the OpenTelemetry Collector and its paths.
// The invariants of every overlay (strict decoding, workloads, network
// policies, autoscaling) run on it through kustomizations.
func TestAWSOverlay(t *testing.T) {
	m := render(t, awsOverlay)

	t.Run("managed Redis and no Secret", func(t *testing.T) {
		if ss := all[appsv1.StatefulSet](m); len(ss) != 0 {
			t.Errorf("renders %d StatefulSets; Redis is managed (ElastiCache)", len(ss))
		}
		if s := all[corev1.Secret](m); len(s) != 0 {
			t.Error("renders a Secret: `kubectl apply -k` would overwrite the real credentials with placeholders")
		}
	})

	t.Run("ALB Ingress", func(t *testing.T) {
		ing := mustNamed[networkingv1.Ingress](t, m, "api")
		if c := ing.Spec.IngressClassName; c == nil || *c != "alb" {
			t.Errorf("ingressClassName %v, want alb (AWS Load Balancer Controller)", c)
		}
		a := ing.Annotations
		for k, v := range map[string]string{
			"alb.ingress.kubernetes.io/scheme":           "internet-facing",
			"alb.ingress.kubernetes.io/target-type":      "ip",
			"alb.ingress.kubernetes.io/ssl-redirect":     "443",
			"alb.ingress.kubernetes.io/healthcheck-port": "traffic-port",
			"alb.ingress.kubernetes.io/success-codes":    "200",
			"alb.ingress.kubernetes.io/healthcheck-path": readinessPath(t, m),
			"alb.ingress.kubernetes.io/load-balancer-attributes": "idle_timeout.timeout_seconds=" +
				strconv.Itoa(int(albIdleTimeout.Seconds())),
		} {
			if a[k] != v {
				t.Errorf("annotation %s = %q, want %q", k, a[k], v)
			}
		}
		if cfg := loadConfig(t, m); cfg.SSEHeartbeat >= albIdleTimeout/2 {
			t.Errorf("SSE_HEARTBEAT %s is too close to the ALB's idle timeout %s", cfg.SSEHeartbeat, albIdleTimeout)
		}

		var listeners []map[string]int
		if err := json.Unmarshal([]byte(a["alb.ingress.kubernetes.io/listen-ports"]), &listeners); err != nil {
			t.Fatalf("listen-ports %q: %v", a["alb.ingress.kubernetes.io/listen-ports"], err)
		}
		want := []map[string]int{{"HTTP": 80}, {"HTTPS": 443}}
		if len(listeners) != len(want) {
			t.Errorf("listen-ports %v, want %v", listeners, want)
		}
		for _, w := range want {
			if !slices.ContainsFunc(listeners, func(l map[string]int) bool { return len(l) == 1 && l[firstKey(w)] == w[firstKey(w)] }) {
				t.Errorf("listen-ports %v lack %v", listeners, w)
			}
		}
		if arn := a["alb.ingress.kubernetes.io/certificate-arn"]; !strings.HasPrefix(arn, "arn:aws:acm:") {
			t.Errorf("certificate-arn %q is not an ACM certificate's ARN", arn)
		}

		// TLS ends at the ALB: every host is listed (the controller's
		// certificate discovery), and no in-cluster certificate is named.
		var tlsHosts []string
		for _, tls := range ing.Spec.TLS {
			tlsHosts = append(tlsHosts, tls.Hosts...)
			if tls.SecretName != "" {
				t.Errorf("spec.tls names Secret %q, which the ALB controller ignores (the certificate is ACM's)", tls.SecretName)
			}
		}
		for _, r := range ing.Spec.Rules {
			if !slices.Contains(tlsHosts, r.Host) {
				t.Errorf("host %q is not in spec.tls", r.Host)
			}
		}
	})

	t.Run("IRSA service accounts", func(t *testing.T) {
		for _, name := range []string{"api", "worker", collectorName} {
			d := mustNamed[appsv1.Deployment](t, m, name)
			saName := d.Spec.Template.Spec.ServiceAccountName
			if saName != name {
				t.Errorf("Deployment %s runs under service account %q, want %q", name, saName, name)
				continue
			}
			sa := mustNamed[corev1.ServiceAccount](t, m, saName)
			if arn := sa.Annotations["eks.amazonaws.com/role-arn"]; !roleARN.MatchString(arn) {
				t.Errorf("ServiceAccount %s: eks.amazonaws.com/role-arn %q is not an IAM role ARN", sa.Name, arn)
			}
			if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("ServiceAccount %s mounts a Kubernetes API token by default", sa.Name)
			}
		}
	})

	t.Run("collector", func(t *testing.T) {
		d := mustNamed[appsv1.Deployment](t, m, collectorName)
		w := workload{"Deployment", d.Name, d.Spec.Template}
		ctr := container(t, w, collectorName)
		if !strings.HasPrefix(ctr.Image, "otel/opentelemetry-collector-contrib:") {
			t.Errorf("collector image %q, want the contrib distribution (the AWS exporters)", ctr.Image)
		}
		cc := collectorConfig(t, m, w, ctr)

		for _, p := range []struct {
			protocol string
			port     int32
		}{{"grpc", 4317}, {"http", 4318}} {
			ep, _ := dig(cc, "receivers", "otlp", "protocols", p.protocol, "endpoint").(string)
			if got := hostPort(t, ep); got != p.port {
				t.Errorf("OTLP %s receiver on %q, want port %d", p.protocol, ep, p.port)
			} else if portNumber(t, ctr, "otlp-"+p.protocol) != p.port {
				t.Errorf("container port otlp-%s is not %d", p.protocol, p.port)
			}
		}
		if ns, _ := dig(cc, "exporters", "awsemf", "namespace").(string); ns == "" {
			t.Error("exporter awsemf has no CloudWatch namespace")
		}
		if dig(cc, "exporters", "awsxray") == nil {
			t.Error("no awsxray exporter")
		}
		for pipeline, exporter := range map[string]string{"traces": "awsxray", "metrics": "awsemf"} {
			p, ok := dig(cc, "service", "pipelines", pipeline).(map[string]any)
			if !ok {
				t.Errorf("no %s pipeline", pipeline)
				continue
			}
			if !slices.Contains(names(p["receivers"]), "otlp") {
				t.Errorf("pipeline %s does not receive OTLP", pipeline)
			}
			if !slices.Contains(names(p["exporters"]), exporter) {
				t.Errorf("pipeline %s does not export to %s", pipeline, exporter)
			}
			procs := names(p["processors"])
			if len(procs) < 2 || procs[0] != "memory_limiter" || procs[len(procs)-1] != "batch" {
				t.Errorf("pipeline %s processors %q: want memory_limiter first and batch last", pipeline, procs)
			}
			// Every component a pipeline names must be configured, or the
			// collector refuses to start.
			for _, kind := range []string{"receivers", "processors", "exporters"} {
				for _, n := range names(p[kind]) {
					if _, ok := dig(cc, kind).(map[string]any)[n]; !ok {
						t.Errorf("pipeline %s names %s %q, which is not configured", pipeline, kind, n)
					}
				}
			}
		}
		if !slices.Contains(names(dig(cc, "service", "extensions")), "health_check") {
			t.Error("the health_check extension is not enabled")
		}
		health, _ := dig(cc, "extensions", "health_check", "endpoint").(string)
		for kind, probe := range map[string]*corev1.Probe{"readiness": ctr.ReadinessProbe, "liveness": ctr.LivenessProbe} {
			if probe == nil || probe.HTTPGet == nil {
				t.Errorf("collector %s probe is not an HTTP GET", kind)
				continue
			}
			if got := portNumber(t, ctr, probe.HTTPGet.Port.String()); got != hostPort(t, health) {
				t.Errorf("collector %s probe on port %d, but health_check listens on %q", kind, got, health)
			}
		}
	})

	t.Run("api and worker export to the collector", func(t *testing.T) {
		svc := mustNamed[corev1.Service](t, m, collectorName)
		d := mustNamed[appsv1.Deployment](t, m, collectorName)
		collector := endpoint{"Deployment/" + collectorName, namespace, d.Spec.Template.Labels}
		if len(selects(t, m, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector})) != 1 {
			t.Errorf("Service %s does not select the collector alone", svc.Name)
		}
		for _, name := range []string{"api", "worker"} {
			w := deploymentWorkload(t, m, name)
			env := map[string]string{}
			for _, e := range container(t, w, name).Env {
				env[e.Name] = e.Value
			}
			if !tracing.Enabled(func(k string) string { return env[k] }) {
				t.Errorf("%s: tracing is off (no OTEL_EXPORTER_OTLP_ENDPOINT)", name)
				continue
			}
			// X-Ray keeps a trace id only if its first 32 bits are the
			// start time, which the xray propagator's id generator gives.
			if !slices.Contains(strings.Split(env["OTEL_PROPAGATORS"], ","), "xray") {
				t.Errorf("%s: OTEL_PROPAGATORS %q lacks xray", name, env["OTEL_PROPAGATORS"])
			}
			u, err := url.Parse(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
			if err != nil {
				t.Fatalf("%s: OTEL_EXPORTER_OTLP_ENDPOINT: %v", name, err)
			}
			// The service exports over OTLP/HTTP (otlptracehttp).
			port, _ := strconv.Atoi(u.Port())
			i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(port) })
			if u.Scheme != "http" || u.Hostname() != svc.Name || i < 0 || svc.Spec.Ports[i].TargetPort.String() != "otlp-http" {
				t.Errorf("%s: OTEL_EXPORTER_OTLP_ENDPOINT %q, want http://%s:<its otlp-http port>", name, u, svc.Name)
			}
			client := endpoint{"Deployment/" + name, namespace, w.template.Labels}
			if eg, in := allows(t, m, client, collector, int32(port)); !eg || !in {
				t.Errorf("%s -> collector port %d: egress allowed %v, ingress allowed %v; want both", name, port, eg, in)
			}
		}
		// Nothing else reaches the collector, and it reaches AWS over HTTPS.
		if eg, in := allows(t, m, endpoint{"another pod", namespace, map[string]string{"app": "other"}}, collector, 4318); eg && in {
			t.Error("any pod of the namespace may send to the collector")
		}
		var https bool
		for _, np := range all[networkingv1.NetworkPolicy](m) {
			if !matches(t, &np.Spec.PodSelector, collector.labels) {
				continue
			}
			for _, rule := range np.Spec.Egress {
				for _, peer := range rule.To {
					https = https || (peer.IPBlock != nil && peer.IPBlock.CIDR == "0.0.0.0/0" && portMatches(rule.Ports, 443))
				}
			}
		}
		if !https {
			t.Error("the collector has no HTTPS egress to the AWS endpoints")
		}
	})

	t.Run("ALB reaches the api", func(t *testing.T) {
		// Target type ip: the ALB connects to the pods from its VPC
		// addresses, not from an ingress controller's pods.
		api := deploymentWorkload(t, m, "api")
		port := addrPort(t, loadConfig(t, m).APIAddr)
		var fromVPC bool
		for _, np := range all[networkingv1.NetworkPolicy](m) {
			if !matches(t, &np.Spec.PodSelector, api.template.Labels) {
				continue
			}
			for _, rule := range np.Spec.Ingress {
				for _, peer := range rule.From {
					if peer.IPBlock == nil || !portMatches(rule.Ports, port) {
						continue
					}
					if _, _, err := net.ParseCIDR(peer.IPBlock.CIDR); err != nil {
						t.Errorf("NetworkPolicy %s: %v", np.Name, err)
					}
					fromVPC = true
				}
			}
		}
		if !fromVPC {
			t.Errorf("no NetworkPolicy lets the load balancer's VPC addresses reach the api on %d", port)
		}
	})
}

// readinessPath is the api's readiness probe path, which the ALB's health
// check must use too (a draining api fails it).
func readinessPath(t testing.TB, m *manifest) string {
	t.Helper()
	c := container(t, deploymentWorkload(t, m, "api"), "api")
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
		t.Fatal("api has no HTTP readiness probe")
	}
	return c.ReadinessProbe.HTTPGet.Path
}

// collectorConfig is the collector's configuration file, from the
// ConfigMap the Deployment mounts at the path its --config names.
func collectorConfig(t testing.TB, m *manifest, w workload, ctr corev1.Container) map[string]any {
	t.Helper()
	var configPath string
	for _, a := range ctr.Args {
		if p, ok := strings.CutPrefix(a, "--config="); ok {
			configPath = p
		}
	}
	dir, file := configPath[:strings.LastIndex(configPath, "/")+1], configPath[strings.LastIndex(configPath, "/")+1:]
	var cmName string
	for _, vm := range ctr.VolumeMounts {
		if strings.TrimSuffix(vm.MountPath, "/")+"/" != dir {
			continue
		}
		for _, v := range w.template.Spec.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil {
				cmName = v.ConfigMap.Name
			}
		}
	}
	if !strings.HasPrefix(cmName, collectorConfigPrefix) || file != collectorConfigKey {
		t.Fatalf("collector reads --config=%q from ConfigMap %q; want %s from the generated %s<hash>", configPath, cmName, collectorConfigKey, collectorConfigPrefix)
	}
	cm := mustNamed[corev1.ConfigMap](t, m, cmName)
	raw, ok := cm.Data[file]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", cmName, file)
	}
	var cc map[string]any
	if err := yaml.UnmarshalStrict([]byte(raw), &cc); err != nil {
		t.Fatalf("collector configuration: %v", err)
	}
	return cc
}

// dig walks nested maps by key; nil when a key is missing.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// names is a YAML list of component names.
func names(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// hostPort is the port of a host:port listen address; 0 when there is none.
func hostPort(t testing.TB, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		return 0
	}
	return int32(n)
}

func firstKey(m map[string]int) string {
	for k := range m {
		return k
	}
	return ""
}
