// Package sandbox owns the lifecycle of a pod sandbox on this node: the
// namespaces a pod's containers join, the per-pod files they bind-mount and
// the optional infra process that holds a shared PID namespace.
//
// Layout on disk, for a sandbox with ID <id> and NetNSDir <n> (default
// /run/berth/netns):
//
//	<n>/<id>                  network namespace pin (what CNI is given)
//	<dir(n)>/ipcns/<id>       IPC namespace pin (sibling dir, as CRI-O's pinns)
//	<dir(n)>/utsns/<id>       UTS namespace pin, hostname set inside
//	<Spec.Dir>/hostname, hosts, resolv.conf
//	<Spec.Dir>/shm            tmpfs for /dev/shm
//
// IPC and UTS pins live in sibling directories, not as <n>/<id>-ipc, so
// that NetNSDir holds only network namespaces (tools list it) and no sandbox
// ID can collide with another sandbox's suffixed pin.
//
// The package keeps no state beyond the in-memory reapers of the infra
// processes it started: everything else is in the returned Pod record,
// which the caller persists and hands back, also after a restart.
package sandbox
