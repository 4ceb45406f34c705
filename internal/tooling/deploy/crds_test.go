package deploy_test

// Local types for the custom resources the manifests use, with the fields
// of their published CRDs that the manifests may use; decoding is strict, so
// a field not modelled here is refused (add it here when it is needed and
// exists upstream).
//
// KEDA: keda.sh/v1alpha1 ScaledObject and TriggerAuthentication (KEDA
// 2.12+, for scalingModifiers). Prometheus Operator: monitoring.coreos.com/v1
// ServiceMonitor, PodMonitor and PrometheusRule.

import (
	"fmt"
	"slices"
	"sort"
	"strconv"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

type ScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ScaledObjectSpec `json:"spec"`
}

type ScaledObjectSpec struct {
	ScaleTargetRef        ScaleTarget `json:"scaleTargetRef"`
	PollingInterval       *int32      `json:"pollingInterval,omitempty"`
	CooldownPeriod        *int32      `json:"cooldownPeriod,omitempty"`
	InitialCooldownPeriod *int32      `json:"initialCooldownPeriod,omitempty"`
	IdleReplicaCount      *int32      `json:"idleReplicaCount,omitempty"`
	MinReplicaCount       *int32      `json:"minReplicaCount,omitempty"`
	MaxReplicaCount       *int32      `json:"maxReplicaCount,omitempty"`
	Fallback              *struct {
		FailureThreshold int32  `json:"failureThreshold"`
		Replicas         int32  `json:"replicas"`
		Behavior         string `json:"behavior,omitempty"`
	} `json:"fallback,omitempty"`
	Advanced *struct {
		RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
		HorizontalPodAutoscalerConfig *struct {
			Name     string                                         `json:"name,omitempty"`
			Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
		} `json:"horizontalPodAutoscalerConfig,omitempty"`
		ScalingModifiers *ScalingModifiers `json:"scalingModifiers,omitempty"`
	} `json:"advanced,omitempty"`
	Triggers []Trigger `json:"triggers"`
}

type ScaleTarget struct {
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	Name                   string `json:"name"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type ScalingModifiers struct {
	Formula          string `json:"formula"`
	Target           string `json:"target"`
	ActivationTarget string `json:"activationTarget,omitempty"`
	MetricType       string `json:"metricType,omitempty"`
}

type Trigger struct {
	Type              string            `json:"type"`
	Name              string            `json:"name,omitempty"`
	Metadata          map[string]string `json:"metadata"`
	UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
	MetricType        string            `json:"metricType,omitempty"`
	AuthenticationRef *struct {
		Name string `json:"name"`
		Kind string `json:"kind,omitempty"`
	} `json:"authenticationRef,omitempty"`
}

// redisTriggerMetadata are the parameters of KEDA's Redis list scalers, by
// trigger type: "redis" (one server), "redis-sentinel" (the master a
// Sentinel group names) and "redis-cluster". Trigger metadata is a
// free-form map in the CRD, so a misspelled parameter would be ignored by
// the API server and by KEDA; only these lists catch it. A cluster has only
// database 0, so databaseIndex is refused for redis-cluster.
var redisTriggerMetadata = map[string][]string{
	"redis": {
		"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv",
		"usernameFromEnv", "passwordFromEnv", "databaseIndex", "enableTLS", "unsafeSsl",
		"listName", "listLength", "activationListLength",
	},
	"redis-sentinel": {
		"addresses", "addressesFromEnv", "hosts", "hostsFromEnv", "ports", "portsFromEnv",
		"usernameFromEnv", "passwordFromEnv", "sentinelUsernameFromEnv", "sentinelPasswordFromEnv",
		"sentinelMaster", "sentinelMasterFromEnv", "databaseIndex", "enableTLS", "unsafeSsl",
		"listName", "listLength", "activationListLength",
	},
	"redis-cluster": {
		"addresses", "addressesFromEnv", "hosts", "hostsFromEnv", "ports", "portsFromEnv",
		"usernameFromEnv", "passwordFromEnv", "enableTLS", "unsafeSsl",
		"listName", "listLength", "activationListLength",
	},
}

func (s *ScaledObject) validate() error {
	if s.Spec.ScaleTargetRef.Name == "" {
		return fmt.Errorf("spec.scaleTargetRef.name is required")
	}
	if len(s.Spec.Triggers) == 0 {
		return fmt.Errorf("spec.triggers is required")
	}
	if m := s.Spec.Advanced; m != nil && m.ScalingModifiers != nil {
		if m.ScalingModifiers.Formula == "" || m.ScalingModifiers.Target == "" {
			return fmt.Errorf("spec.advanced.scalingModifiers needs formula and target")
		}
		if _, err := strconv.ParseFloat(m.ScalingModifiers.Target, 64); err != nil {
			return fmt.Errorf("spec.advanced.scalingModifiers.target: %v", err)
		}
	}
	for i, tr := range s.Spec.Triggers {
		known, ok := redisTriggerMetadata[tr.Type]
		if !ok {
			return fmt.Errorf("spec.triggers[%d].type %q: only redis, redis-sentinel and redis-cluster are modelled here", i, tr.Type)
		}
		var unknown []string
		for k := range tr.Metadata {
			if !slices.Contains(known, k) {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return fmt.Errorf("spec.triggers[%d].metadata: unknown %s scaler parameters %q", i, tr.Type, unknown)
		}
		if tr.Metadata["listName"] == "" {
			return fmt.Errorf("spec.triggers[%d].metadata.listName is required", i)
		}
	}
	return nil
}

type TriggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef,omitempty"`
		Env []struct {
			Parameter     string `json:"parameter"`
			Name          string `json:"name"`
			ContainerName string `json:"containerName,omitempty"`
		} `json:"env,omitempty"`
	} `json:"spec"`
}

type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		TargetLabels      []string             `json:"targetLabels,omitempty"`
		PodTargetLabels   []string             `json:"podTargetLabels,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *NamespaceSelector   `json:"namespaceSelector,omitempty"`
		Endpoints         []struct {
			Port           string              `json:"port,omitempty"`
			TargetPort     *intstr.IntOrString `json:"targetPort,omitempty"`
			ScrapeEndpoint `json:",inline"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type PodMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel            string               `json:"jobLabel,omitempty"`
		PodTargetLabels     []string             `json:"podTargetLabels,omitempty"`
		Selector            metav1.LabelSelector `json:"selector"`
		NamespaceSelector   *NamespaceSelector   `json:"namespaceSelector,omitempty"`
		PodMetricsEndpoints []struct {
			Port           string `json:"port,omitempty"`
			PortNumber     int32  `json:"portNumber,omitempty"`
			ScrapeEndpoint `json:",inline"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// ScrapeEndpoint is what ServiceMonitor endpoints and PodMonitor endpoints
// share.
type ScrapeEndpoint struct {
	Path              string          `json:"path,omitempty"`
	Scheme            string          `json:"scheme,omitempty"`
	Interval          string          `json:"interval,omitempty"`
	ScrapeTimeout     string          `json:"scrapeTimeout,omitempty"`
	HonorLabels       bool            `json:"honorLabels,omitempty"`
	Relabelings       []RelabelConfig `json:"relabelings,omitempty"`
	MetricRelabelings []RelabelConfig `json:"metricRelabelings,omitempty"`
}

type NamespaceSelector struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

type RelabelConfig struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    string   `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  string   `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

type PrometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name     string `json:"name"`
			Interval string `json:"interval,omitempty"`
			Rules    []Rule `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

type Rule struct {
	Alert         string            `json:"alert,omitempty"`
	Record        string            `json:"record,omitempty"`
	Expr          string            `json:"expr"`
	For           string            `json:"for,omitempty"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}
