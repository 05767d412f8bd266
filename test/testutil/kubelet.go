package testutil

import (
	"fmt"
	"strings"
)

// KubeletConfig is what differs between the standalone kubelets berth's
// tests and benchmarks run (no API server: static pods only).
type KubeletConfig struct {
	Endpoint   string // the runtime's CRI endpoint, for both services
	Manifests  string // static pod directory
	PodLogsDir string
	Port       int // kubelet's API, on 127.0.0.1
	Healthz    int
	// Extra holds further top-level YAML lines, e.g. shorter periods for a
	// test or a cgroupRoot for a benchmark.
	Extra []string
}

// YAML renders the configuration the kubelet kit (../shared/kubelet) uses:
// see its README for why each field is set. Image GC and eviction are
// kept from deleting a test's images or pods on a full disk.
func (c KubeletConfig) YAML() string {
	var extra string
	if len(c.Extra) > 0 {
		extra = strings.Join(c.Extra, "\n") + "\n"
	}
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: %[1]s
imageServiceEndpoint: %[1]s
staticPodPath: %[2]s
address: 127.0.0.1
port: %[3]d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[4]d
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
podLogsDir: %[5]s
resolvConf: /etc/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
%[6]s`, c.Endpoint, c.Manifests, c.Port, c.Healthz, c.PodLogsDir, extra)
}
