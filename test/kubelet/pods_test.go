package kubelet

import (
	"strings"
	"time"
)

// The subset of the Kubernetes Pod API the scenarios write (as JSON static
// pod manifests) and read back from kubelet's /pods.

type pod struct {
	APIVersion string  `json:"apiVersion"`
	Kind       string  `json:"kind"`
	Metadata   meta    `json:"metadata"`
	Spec       podSpec `json:"spec"`
}

type meta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	UID       string            `json:"uid,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int64       `json:"terminationGracePeriodSeconds,omitempty"`
	DNSPolicy                     string       `json:"dnsPolicy,omitempty"`
	HostNetwork                   bool         `json:"hostNetwork,omitempty"`
	HostPID                       bool         `json:"hostPID,omitempty"`
	HostIPC                       bool         `json:"hostIPC,omitempty"`
	ShareProcessNamespace         *bool        `json:"shareProcessNamespace,omitempty"`
	SecurityContext               *podSecurity `json:"securityContext,omitempty"`
	Volumes                       []volume     `json:"volumes,omitempty"`
	InitContainers                []container  `json:"initContainers,omitempty"`
	Containers                    []container  `json:"containers"`
}

type podSecurity struct {
	RunAsUser      *int64   `json:"runAsUser,omitempty"`
	RunAsGroup     *int64   `json:"runAsGroup,omitempty"`
	FSGroup        *int64   `json:"fsGroup,omitempty"`
	SeccompProfile *seccomp `json:"seccompProfile,omitempty"`
}

type seccomp struct {
	Type string `json:"type"`
}

type volume struct {
	Name     string    `json:"name"`
	EmptyDir *struct{} `json:"emptyDir,omitempty"`
	HostPath *hostPath `json:"hostPath,omitempty"`
}

type hostPath struct {
	Path string `json:"path"`
	Type string `json:"type,omitempty"`
}

type container struct {
	Name            string       `json:"name"`
	Image           string       `json:"image"`
	ImagePullPolicy string       `json:"imagePullPolicy,omitempty"`
	Command         []string     `json:"command,omitempty"`
	RestartPolicy   string       `json:"restartPolicy,omitempty"`
	Lifecycle       *lifecycle   `json:"lifecycle,omitempty"`
	SecurityContext *ctrSecurity `json:"securityContext,omitempty"`
	VolumeMounts    []mount      `json:"volumeMounts,omitempty"`
}

type lifecycle struct {
	PreStop *handler `json:"preStop,omitempty"`
}

type handler struct {
	Exec *execAction `json:"exec,omitempty"`
}

type execAction struct {
	Command []string `json:"command"`
}

type ctrSecurity struct {
	RunAsUser              *int64        `json:"runAsUser,omitempty"`
	ReadOnlyRootFilesystem *bool         `json:"readOnlyRootFilesystem,omitempty"`
	Capabilities           *capabilities `json:"capabilities,omitempty"`
}

type capabilities struct {
	Drop []string `json:"drop,omitempty"`
}

type mount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
}

// podStatus is a pod as kubelet's /pods shows it.
type podStatus struct {
	Metadata meta `json:"metadata"`
	Status   struct {
		Phase      string `json:"phase"`
		PodIP      string `json:"podIP"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
		ContainerStatuses     []ctrStatus `json:"containerStatuses"`
		InitContainerStatuses []ctrStatus `json:"initContainerStatuses"`
	} `json:"status"`
}

type ctrStatus struct {
	Name         string `json:"name"`
	Ready        bool   `json:"ready"`
	RestartCount int    `json:"restartCount"`
	ContainerID  string `json:"containerID"`
	State        struct {
		Running *struct {
			StartedAt time.Time `json:"startedAt"`
		} `json:"running"`
		Waiting *struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"waiting"`
		Terminated *struct {
			ExitCode int    `json:"exitCode"`
			Reason   string `json:"reason"`
		} `json:"terminated"`
	} `json:"state"`
}

// ready: every container (sidecars included) running and ready, and the
// pod's Ready condition true.
func (p podStatus) ready() bool {
	if len(p.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if !c.Ready || c.State.Running == nil {
			return false
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// container is the status of the (init) container named name.
func (p podStatus) container(name string) (ctrStatus, bool) {
	for _, c := range append(append([]ctrStatus{}, p.Status.ContainerStatuses...), p.Status.InitContainerStatuses...) {
		if c.Name == name {
			return c, true
		}
	}
	return ctrStatus{}, false
}

// id is the runtime's container ID (kubelet shows "<runtime>://<id>").
func (c ctrStatus) id() string {
	if _, id, ok := strings.Cut(c.ContainerID, "://"); ok {
		return id
	}
	return c.ContainerID
}

func ptr[T any](v T) *T { return &v }

const (
	busybox = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
	// loop keeps a container alive until it is killed; marker (printed
	// first) is what /containerLogs must return and what ps shows.
	loop = "while true; do sleep 1; done"
)

// shell is a busybox container running script under sh -c; the script's
// first line prints the container's log marker.
func shell(name, marker, script string) container {
	return container{
		Name:            name,
		Image:           busybox,
		ImagePullPolicy: "IfNotPresent",
		Command:         []string{"sh", "-c", "echo " + marker + "; " + script},
	}
}

// newPod is a static pod in ns with the given containers.
func newPod(ns, name string, grace int64, ctrs ...container) pod {
	return pod{
		APIVersion: "v1",
		Kind:       "Pod",
		Metadata:   meta{Name: name, Namespace: ns, Labels: map[string]string{"app": "berth-kubelet"}},
		Spec: podSpec{
			TerminationGracePeriodSeconds: ptr(grace),
			DNSPolicy:                     "Default",
			Containers:                    ctrs,
		},
	}
}

// markerOf is the log marker of a container of a pod.
func markerOf(podName, ctr string) string { return "marker-" + podName + "-" + ctr }
