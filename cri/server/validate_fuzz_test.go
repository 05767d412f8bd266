package server

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzValidateRequests feeds hostile strings to request validation: it
// must never panic, every refusal is InvalidArgument, an accepted log path
// stays inside the pod's log directory, and nothing with a NUL passes.
func FuzzValidateRequests(f *testing.F) {
	f.Add("nginx", "default", "uid-1", "host", "/var/log/pods/x", "c", "c.log", "img:1")
	f.Add("", "", "", "", "", "", "", "")
	f.Add("a\x00b", "ns", "u", "h", "/l", "n\x00", "../../etc/passwd", "x")
	f.Add("p", "ns", "u", "h", "/l", "c", "a/../../b.log", "x")
	f.Add("p", "ns", "u", "h", "relative", "c", "/abs.log", "x")
	f.Add("p", "ns", "u", "h", "/", "c", "..", "x")
	f.Fuzz(func(t *testing.T, name, ns, uid, hostname, logDir, ctrName, logRel, image string) {
		pod := &runtime.PodSandboxConfig{
			Metadata:     &runtime.PodSandboxMetadata{Name: name, Namespace: ns, Uid: uid},
			Hostname:     hostname,
			LogDirectory: logDir,
			Annotations:  map[string]string{"kubernetes.io/ingress-bandwidth": uid},
		}
		if err := validatePodConfig(pod); err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("validatePodConfig: %v is not InvalidArgument", err)
			}
		} else if strings.ContainsRune(name+ns+uid+hostname+logDir, 0) {
			t.Fatalf("validatePodConfig accepted a NUL byte")
		}
		ctr := &runtime.ContainerConfig{
			Metadata: &runtime.ContainerMetadata{Name: ctrName},
			Image:    &runtime.ImageSpec{Image: image},
			LogPath:  logRel,
		}
		if err := validateContainerConfig(ctr); err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("validateContainerConfig: %v is not InvalidArgument", err)
		}
		p, err := logPath(logDir, logRel)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("logPath: %v is not InvalidArgument", err)
			}
			return
		}
		if p == "" {
			return
		}
		rel, err := filepath.Rel(logDir, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || rel == "." {
			t.Fatalf("logPath(%q, %q) = %q escapes the directory", logDir, logRel, p)
		}
	})
}
