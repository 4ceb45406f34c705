package deploy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// kustomizations are the directories under k8s/ that render: the base and
// every overlay. TestEveryOverlayIsTested keeps the list complete.
var kustomizations = []string{"base", "overlays/dev", "overlays/prod", "overlays/sentinel", "overlays/cluster", "overlays/aws"}

// kinds makes the typed value that an object of each apiVersion and kind is
// decoded into. Kubernetes kinds use the k8s.io/api types; KEDA and
// Prometheus Operator kinds use the local types of crds_test.go. A kind not
// listed here fails the test: add its type rather than skip it.
var kinds = map[string]func() any{
	"v1/Namespace":                            func() any { return new(corev1.Namespace) },
	"v1/ConfigMap":                            func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                               func() any { return new(corev1.Secret) },
	"v1/ServiceAccount":                       func() any { return new(corev1.ServiceAccount) },
	"v1/Service":                              func() any { return new(corev1.Service) },
	"apps/v1/Deployment":                      func() any { return new(appsv1.Deployment) },
	"apps/v1/StatefulSet":                     func() any { return new(appsv1.StatefulSet) },
	"networking.k8s.io/v1/Ingress":            func() any { return new(networkingv1.Ingress) },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return new(networkingv1.NetworkPolicy) },
	"policy/v1/PodDisruptionBudget":           func() any { return new(policyv1.PodDisruptionBudget) },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
	"keda.sh/v1alpha1/ScaledObject":           func() any { return new(ScaledObject) },
	"keda.sh/v1alpha1/TriggerAuthentication":  func() any { return new(TriggerAuthentication) },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return new(ServiceMonitor) },
	"monitoring.coreos.com/v1/PodMonitor":     func() any { return new(PodMonitor) },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return new(PrometheusRule) },
}

// object is one rendered object, decoded.
type object struct {
	Kind, Name, Namespace string
	// Obj is a pointer to the typed value (see kinds).
	Obj any
}

func (o object) String() string { return o.Kind + "/" + o.Name }

// decodeStrict decodes one object from JSON into its typed value. Unknown
// fields, fields that match only when case is ignored, and duplicate fields
// are errors, as with the API server's strict field validation.
func decodeStrict(data []byte) (object, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return object{}, err
	}
	o := object{Kind: head.Kind, Name: head.Metadata.Name, Namespace: head.Metadata.Namespace}
	newObj, ok := kinds[head.APIVersion+"/"+head.Kind]
	if !ok {
		return o, fmt.Errorf("%s: no strict decoder for apiVersion %q kind %q (add its type to kinds)", o, head.APIVersion, head.Kind)
	}
	o.Obj = newObj()
	strict, err := sigsjson.UnmarshalStrict(data, o.Obj)
	if err != nil {
		return o, fmt.Errorf("%s: %w", o, err)
	}
	if len(strict) > 0 {
		return o, fmt.Errorf("%s: %w", o, errors.Join(strict...))
	}
	if v, ok := o.Obj.(interface{ validate() error }); ok {
		if err := v.validate(); err != nil {
			return o, fmt.Errorf("%s: %w", o, err)
		}
	}
	return o, nil
}

// decodeYAMLFile decodes a one-document YAML file strictly.
func decodeYAMLFile(path string) (object, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return object{}, err
	}
	data, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return object{}, fmt.Errorf("%s: %w", path, err)
	}
	return decodeStrict(data)
}

// manifest is a rendered kustomization.
type manifest struct {
	dir     string
	objects []object
}

var (
	renderMu    sync.Mutex
	renderCache = map[string]*manifest{}
)

// render builds k8s/<dir> with kustomize (once per test binary) and decodes
// every object strictly.
func render(t testing.TB, dir string) *manifest {
	t.Helper()
	renderMu.Lock()
	defer renderMu.Unlock()
	if m, ok := renderCache[dir]; ok {
		return m
	}
	path := filepath.Join(repoRoot(t), "k8s", filepath.FromSlash(dir))
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), path)
	if err != nil {
		t.Fatalf("kustomize build k8s/%s: %v", dir, err)
	}
	m := &manifest{dir: dir}
	var errs []error
	for _, r := range resources.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		o, err := decodeStrict(data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.objects = append(m.objects, o)
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("k8s/%s: %v", dir, err)
	}
	renderCache[dir] = m
	return m
}

// all returns the objects of type T.
func all[T any](m *manifest) []*T {
	var out []*T
	for _, o := range m.objects {
		if v, ok := o.Obj.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// named returns the object of type T with the given name, or nil.
func named[T any](m *manifest, name string) *T {
	for _, o := range m.objects {
		if v, ok := o.Obj.(*T); ok && o.Name == name {
			return v
		}
	}
	return nil
}

// mustNamed is named that fails the test when there is none.
func mustNamed[T any](t testing.TB, m *manifest, name string) *T {
	t.Helper()
	v := named[T](m, name)
	if v == nil {
		t.Fatalf("k8s/%s: no %T named %q", m.dir, v, name)
	}
	return v
}

// repoRoot is the module's root directory, found from the test's working
// directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

func TestEveryKustomizationRendersStrictly(t *testing.T) {
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			m := render(t, dir)
			if len(m.objects) == 0 {
				t.Fatal("rendered nothing")
			}
			counts := map[string]int{}
			for _, o := range m.objects {
				counts[o.Kind]++
			}
			t.Logf("%d objects: %v", len(m.objects), counts)
		})
	}
}

// TestEveryOverlayIsTested fails when k8s/overlays has a directory that
// kustomizations does not list.
func TestEveryOverlayIsTested(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join(repoRoot(t), "k8s", "overlays"))
	if err != nil {
		t.Fatal(err)
	}
	listed := strings.Join(kustomizations, " ")
	for _, e := range entries {
		if e.IsDir() && !strings.Contains(" "+listed+" ", " overlays/"+e.Name()+" ") {
			t.Errorf("k8s/overlays/%s is not in kustomizations", e.Name())
		}
	}
}

// TestStrictDecodingCatchesMistakes feeds the decoder objects with one
// mistake each (testdata/bad-*.yaml): every one must be refused, naming the
// field at fault.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"bad-deployment.yaml", "replcas"},
		{"bad-container.yaml", "readinessprobe"},
		{"bad-scaledobject.yaml", "minReplicaCont"},
		{"bad-trigger-metadata.yaml", "listname"},
		{"bad-podmonitor.yaml", "podMetricEndpoints"},
		{"bad-duplicate.yaml", "selector"},
	} {
		t.Run(c.file, func(t *testing.T) {
			_, err := decodeYAMLFile(filepath.Join("testdata", c.file))
			if err == nil {
				t.Fatal("decoded without error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error does not name %q: %v", c.want, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestStrictDecodingAcceptsTheSameObjectsFixed makes sure the decoder does
// not refuse everything: the bad Deployment with its field spelled right
// decodes.
func TestStrictDecodingAcceptsTheSameObjectsFixed(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "bad-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := yaml.YAMLToJSONStrict([]byte(strings.Replace(string(b), "replcas:", "replicas:", 1)))
	if err != nil {
		t.Fatal(err)
	}
	o, err := decodeStrict(data)
	if err != nil {
		t.Fatal(err)
	}
	if d := o.Obj.(*appsv1.Deployment); d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Fatalf("replicas = %v, want 2", d.Spec.Replicas)
	}
}

// TestStrictDecodingKnowsTheTopologyScalers checks the parameter lists of
// KEDA's Sentinel and Cluster list scalers (crds_test.go): a misspelled or
// inapplicable parameter, or an unknown scaler type, is refused, naming it;
// the same trigger spelled right decodes.
func TestStrictDecodingKnowsTheTopologyScalers(t *testing.T) {
	const so = `{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledObject","metadata":{"name":"bad"},
"spec":{"scaleTargetRef":{"name":"worker"},"triggers":[{"type":%q,"metadata":{%s,"listName":"asynq:{snapshot}:pending","listLength":"32"}}]}}`
	for _, c := range []struct{ name, typ, metadata, want string }{
		{"sentinel master misspelled", "redis-sentinel", `"addresses":"s:26379","sentinelmaster":"mymaster"`, "sentinelmaster"},
		{"sentinel single address", "redis-sentinel", `"address":"s:26379","sentinelMaster":"mymaster"`, `"address"`},
		{"cluster database", "redis-cluster", `"addresses":"c:6379","databaseIndex":"0"`, "databaseIndex"},
		{"cluster sentinel master", "redis-cluster", `"addresses":"c:6379","sentinelMaster":"mymaster"`, "sentinelMaster"},
		{"unknown type", "redis-sentinels", `"addresses":"s:26379"`, "redis-sentinels"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeStrict([]byte(fmt.Sprintf(so, c.typ, c.metadata)))
			if err == nil {
				t.Fatal("decoded without error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error does not name %s: %v", c.want, err)
			}
		})
	}
	for _, c := range []struct{ typ, metadata string }{
		{"redis-sentinel", `"addresses":"s:26379","sentinelMaster":"mymaster","databaseIndex":"0"`},
		{"redis-cluster", `"addresses":"c:6379"`},
	} {
		if _, err := decodeStrict([]byte(fmt.Sprintf(so, c.typ, c.metadata))); err != nil {
			t.Errorf("%s: %v", c.typ, err)
		}
	}
}
