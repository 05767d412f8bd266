// Package specgen turns a CRI container request (ContainerConfig plus the
// pod's PodSandboxConfig) and the image's config into an OCI runtime spec
// (config.json) for runc-compatible runtimes.
//
// It is pure apart from reading the container rootfs' /etc/passwd and
// /etc/group (see NewRootfsUsers): everything it needs from the host — the
// pinned namespace paths, the pod files, the cgroup parent, the host's
// AppArmor — arrives in Input, so it is table-tested and fuzzed without
// root. Defaults follow
// containerd's CRI plugin so workloads see what they would see there.
package specgen
