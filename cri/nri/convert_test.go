package nri

import (
	"testing"

	"github.com/containerd/nri/pkg/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
)

func TestPodSandboxConversion(t *testing.T) {
	cfg := &runtime.PodSandboxConfig{Linux: &runtime.LinuxPodSandboxConfig{
		Resources: &runtime.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 1 << 30},
		Overhead:  &runtime.LinuxContainerResources{CpuShares: 10},
	}}
	p := podSandbox(store.Sandbox{
		SandboxMeta: store.SandboxMeta{
			ID: "p1", Metadata: store.PodMetadata{Name: "web", UID: "u1", Namespace: "ns"},
			Labels: map[string]string{"a": "b"}, RuntimeHandler: "runc", CgroupParent: "/kubepods/pod1",
			Config: cfg,
		},
		Status: store.SandboxStatus{
			IPs: []string{"10.0.0.2"}, Pod: store.Pod{NetNS: "/run/netns/x", InfraPID: 42},
			// kubelet resized the pod since: plugins see the new size.
			Resources: store.Resources{CPUShares: 1024, MemoryLimitInBytes: 1 << 30},
		},
	})
	if p.GetId() != "p1" || p.GetName() != "web" || p.GetUid() != "u1" || p.GetNamespace() != "ns" || p.GetRuntimeHandler() != "runc" || p.GetPid() != 42 {
		t.Errorf("identity = %v", p)
	}
	if p.GetLinux().GetCgroupParent() != "/kubepods/pod1" || len(p.GetIps()) != 1 || p.GetLabels()["a"] != "b" {
		t.Errorf("linux, ips, labels = %v", p)
	}
	if p.GetLinux().GetPodResources().GetCpu().GetShares().GetValue() != 1024 || p.GetLinux().GetPodResources().GetMemory().GetLimit().GetValue() != 1<<30 {
		t.Errorf("pod resources = %v", p.GetLinux().GetPodResources())
	}
	if p.GetLinux().GetPodOverhead().GetCpu().GetShares().GetValue() != 10 {
		t.Errorf("overhead = %v", p.GetLinux().GetPodOverhead())
	}
	if ns := p.GetLinux().GetNamespaces(); len(ns) != 1 || ns[0].GetType() != "network" || ns[0].GetPath() != "/run/netns/x" {
		t.Errorf("namespaces = %v", ns)
	}
}

func TestContainerConversion(t *testing.T) {
	adj := -500
	spec := &specs.Spec{
		Annotations: map[string]string{"io.kubernetes.cri.container-name": "app"},
		Process: &specs.Process{
			Args: []string{"/app"}, Env: []string{"A=1"}, OOMScoreAdj: &adj,
			User:    specs.User{UID: 1000, GID: 1000},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 10, Soft: 5}},
		},
		Mounts: []specs.Mount{{Destination: "/data", Source: "/host", Type: "bind"}},
		Linux:  &specs.Linux{CgroupsPath: "/kubepods/pod1/c1", Devices: []specs.LinuxDevice{{Path: "/dev/x", Type: "c", Major: 1, Minor: 3}}},
	}
	c := container(store.Container{
		ContainerMeta: store.ContainerMeta{ID: "c1", SandboxID: "p1", Metadata: store.ContainerMetadata{Name: "app"}},
		Status:        store.ContainerStatus{State: store.ContainerRunning, Pid: 7},
	}, spec)
	if c.GetName() != "app" || c.GetState() != api.ContainerState_CONTAINER_RUNNING || c.GetPid() != 7 || c.GetPodSandboxId() != "p1" {
		t.Errorf("identity = %v", c)
	}
	if len(c.GetArgs()) != 1 || len(c.GetEnv()) != 1 || len(c.GetMounts()) != 1 || len(c.GetRlimits()) != 1 || c.GetUser().GetUid() != 1000 {
		t.Errorf("process and mounts = %v", c)
	}
	if c.GetLinux().GetCgroupsPath() != "/kubepods/pod1/c1" || c.GetLinux().GetOomScoreAdj().GetValue() != -500 || len(c.GetLinux().GetDevices()) != 1 {
		t.Errorf("linux = %v", c.GetLinux())
	}
	// A bundle already gone still describes the record.
	if c := container(store.Container{ContainerMeta: store.ContainerMeta{ID: "c1", Metadata: store.ContainerMetadata{Name: "app"}}, Status: store.ContainerStatus{State: store.ContainerExited}}, nil); c.GetName() != "app" || c.GetState() != api.ContainerState_CONTAINER_STOPPED {
		t.Errorf("without spec = %v", c)
	}
}
