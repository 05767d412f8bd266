package server

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// noNUL refuses NUL bytes in fields that become file names, environment
// variables of CNI plugins or runtime arguments: the kernel cannot carry
// them, so such a request would otherwise fail late, deep in a plugin.
func noNUL(fields map[string]string) error {
	for name, v := range fields {
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%s contains a NUL byte: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func podNames(c *runtime.PodSandboxConfig) map[string]string {
	m := c.GetMetadata()
	return map[string]string{
		"pod sandbox config metadata.name":      m.GetName(),
		"pod sandbox config metadata.namespace": m.GetNamespace(),
		"pod sandbox config metadata.uid":       m.GetUid(),
		"pod sandbox config hostname":           c.GetHostname(),
		"pod sandbox config log_directory":      c.GetLogDirectory(),
		"pod sandbox config cgroup_parent":      c.GetLinux().GetCgroupParent(),
	}
}

func containerNames(c *runtime.ContainerConfig) map[string]string {
	return map[string]string{
		"container config metadata.name": c.GetMetadata().GetName(),
		"container config log_path":      c.GetLogPath(),
		"container config working_dir":   c.GetWorkingDir(),
		"container config image.image":   c.GetImage().GetImage(),
	}
}
