// Package stats samples containers and pods for the CRI stats and metrics
// RPCs: cgroup usage, the pod network namespace's counters, the writable
// layer's disk use, and the OOM kill counts of containers' cgroups.
// cri/server turns store records into calls here and filters the results.
package stats

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/cgroups"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/shim/api"
)

// Collector keeps what stats need between calls: each object's
// cgroup path (read once from its bundle), the previous CPU sample of each
// (usage_nano_cores is a rate), each running container's last cgroup
// sample for sampleTTL, and writable-layer sizes, whose directory walk is
// too slow to repeat on every 10 s poll of every container.
type Collector struct {
	cg   *cgroups.Manager
	root string // berth's root dir, where writable layers live
	log  *slog.Logger
	oom  *cgroups.OOMWatcher // nil: OOM kills are read from the cgroup only

	now func() time.Time // time.Now; tests set their own clock

	mu      sync.Mutex             // guards the maps below
	paths   map[string]specInfo    // container ID -> what its spec says
	cpu     map[string]cpuSample   // container or "pod/"+sandbox ID -> last sample
	samples map[string]ctrSample   // container ID -> last cgroup sample
	layers  map[string]layerSample // container ID -> writable layer usage
	fsMount string                 // mountpoint of the root dir, once known
	gone    forgotten              // keys forgotten last, cached no more
}

// forgotten holds the last forgetRing keys dropped by ForgetContainer and
// ForgetPod. A stats call that read a record before its removal finishes
// after the forget; without this it would cache the removed object again,
// and on a node whose stats nobody lists unfiltered that entry stays.
// Bounded: a call in flight across hundreds of removals does not happen.
type forgotten struct {
	keys map[string]struct{}
	ring [forgetRing]string
	next int
}

const forgetRing = 256

func (f *forgotten) add(key string) {
	if _, ok := f.keys[key]; ok {
		return
	}
	if f.keys == nil {
		f.keys = make(map[string]struct{}, forgetRing)
	}
	if old := f.ring[f.next]; old != "" {
		delete(f.keys, old)
	}
	f.ring[f.next] = key
	f.next = (f.next + 1) % forgetRing
	f.keys[key] = struct{}{}
}

func (f *forgotten) has(key string) bool {
	_, ok := f.keys[key]
	return ok
}

// ctrSample is a container's cgroup read at one time, with the CPU rate
// computed then.
type ctrSample struct {
	st        cgroups.Stats
	at        time.Time
	nanoCores uint64
	hasNano   bool
}

type cpuSample struct {
	usage uint64
	at    time.Time
}

type layerSample struct {
	bytes, inodes uint64
	at            time.Time
}

const (
	// cpuWindow is the shortest interval usage_nano_cores is averaged over:
	// two calls in quick succession still get a meaningful rate.
	cpuWindow = time.Second
	// layerTTL bounds how stale a writable layer size may be (cadvisor
	// refreshes its disk usage about once a minute).
	layerTTL = 30 * time.Second
	// sampleTTL is how long a container's cgroup sample answers again.
	// kubelet asks for every container twice in a row, in
	// ListPodSandboxStats and in ListContainerStats; reading five cgroup
	// files per container for each was half of berthd's CPU under a full
	// node's polling (250 pods, CPU profile). Each answer carries the
	// sample's own timestamp.
	sampleTTL = time.Second
)

// Options configure a Collector; Cgroups is required.
type Options struct {
	Cgroups *cgroups.Manager
	Root    string // berth's root dir
	Logger  *slog.Logger
	OOM     *cgroups.OOMWatcher
}

// New returns a collector with nothing cached.
func New(o Options) *Collector {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Collector{
		cg:      o.Cgroups,
		root:    o.Root,
		log:     o.Logger,
		oom:     o.OOM,
		now:     time.Now,
		paths:   map[string]specInfo{},
		cpu:     map[string]cpuSample{},
		samples: map[string]ctrSample{},
		layers:  map[string]layerSample{},
	}
}

// specInfo is what berthd reads back from a container's config.json.
type specInfo struct {
	cgroup string // cgroup path below the hierarchy root
	user   *runtime.ContainerUser
}

// spec returns what the container's bundle spec says, read once.
func (c *Collector) spec(rec store.Container) (specInfo, error) {
	c.mu.Lock()
	info, ok := c.paths[rec.ID]
	c.mu.Unlock()
	if ok {
		return info, nil
	}
	spec, err := api.ReadSpec(rec.Bundle)
	if err != nil {
		return specInfo{}, fmt.Errorf("container %q: %w", rec.ID, err)
	}
	if spec.Linux != nil && spec.Linux.CgroupsPath != "" {
		info.cgroup = cgroups.Path(spec.Linux.CgroupsPath)
	}
	if spec.Process != nil {
		u := spec.Process.User
		lu := &runtime.LinuxContainerUser{Uid: int64(u.UID), Gid: int64(u.GID)}
		for _, g := range u.AdditionalGids {
			lu.SupplementalGroups = append(lu.SupplementalGroups, int64(g))
		}
		info.user = &runtime.ContainerUser{Linux: lu}
	}
	c.mu.Lock()
	if !c.gone.has(rec.ID) {
		c.paths[rec.ID] = info
	}
	c.mu.Unlock()
	return info, nil
}

// CgroupOf returns the container's cgroup path as its spec names it.
func (c *Collector) CgroupOf(rec store.Container) (string, error) {
	info, err := c.spec(rec)
	if err != nil {
		return "", err
	}
	if info.cgroup == "" {
		return "", fmt.Errorf("spec of container %q names no cgroup", rec.ID)
	}
	return info.cgroup, nil
}

// User is the identity the container's process runs as
// (ContainerStatus.user), nil when the bundle is gone.
func (c *Collector) User(rec store.Container) *runtime.ContainerUser {
	info, err := c.spec(rec)
	if err != nil {
		return nil
	}
	return info.user
}

// nanoCores turns a cumulative CPU reading into a rate against the
// previous sample of key; nil on the first sample.
func (c *Collector) nanoCores(key string, usage uint64, now time.Time) *runtime.UInt64Value {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone.has(key) {
		return nil
	}
	prev, ok := c.cpu[key]
	if !ok || usage < prev.usage {
		c.cpu[key] = cpuSample{usage: usage, at: now}
		return nil
	}
	dt := now.Sub(prev.at)
	if dt >= cpuWindow {
		c.cpu[key] = cpuSample{usage: usage, at: now}
	}
	if dt <= 0 {
		return nil
	}
	return &runtime.UInt64Value{Value: uint64(float64(usage-prev.usage) / dt.Seconds())}
}

// ForgetContainer drops what is cached about a container whose record is
// gone. Forget does the same for every object at each unfiltered
// ListContainerStats, but a node whose stats nobody polls (a churn of
// 10,000 lifecycles, full-node bench) kept every container's spec info.
func (c *Collector) ForgetContainer(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.paths, id)
	delete(c.cpu, id)
	delete(c.layers, id)
	delete(c.samples, id)
	c.gone.add(id)
}

// ForgetPod drops a removed pod's CPU sample.
func (c *Collector) ForgetPod(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.cpu, PodKeyPrefix+id)
	c.gone.add(PodKeyPrefix + id)
}

// Forget drops what is cached about objects not in keep.
func (c *Collector) Forget(keep map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.paths {
		if !keep[id] {
			delete(c.paths, id)
		}
	}
	for id := range c.cpu {
		if !keep[id] {
			delete(c.cpu, id)
		}
	}
	for id := range c.layers {
		if !keep[id] {
			delete(c.layers, id)
		}
	}
	for id := range c.samples {
		if !keep[id] {
			delete(c.samples, id)
		}
	}
}

func u64(v uint64) *runtime.UInt64Value { return &runtime.UInt64Value{Value: v} }

func psi(p *cgroups.Pressure) *runtime.PsiStats {
	if p == nil {
		return nil
	}
	d := func(x cgroups.PressureData) *runtime.PsiData {
		return &runtime.PsiData{Total: x.Total, Avg10: x.Avg10, Avg60: x.Avg60, Avg300: x.Avg300}
	}
	return &runtime.PsiStats{Some: d(p.Some), Full: d(p.Full)}
}

// usageFromCgroup fills CPU, memory, swap and IO usage from one sample.
func (c *Collector) usageFromCgroup(key string, st cgroups.Stats, now time.Time) (*runtime.CpuUsage, *runtime.MemoryUsage, *runtime.SwapUsage, *runtime.IoUsage) {
	return usageOf(st, now, c.nanoCores(key, st.CPUUsageNanos, now))
}

// usageOf shapes one sample for the CRI; nanoCores is its CPU rate, nil
// when unknown.
func usageOf(st cgroups.Stats, now time.Time, nanoCores *runtime.UInt64Value) (*runtime.CpuUsage, *runtime.MemoryUsage, *runtime.SwapUsage, *runtime.IoUsage) {
	ts := now.UnixNano()
	cpu := &runtime.CpuUsage{
		Timestamp:            ts,
		UsageCoreNanoSeconds: u64(st.CPUUsageNanos),
		UsageNanoCores:       nanoCores,
		Psi:                  psi(st.CPUPressure),
	}
	mem := &runtime.MemoryUsage{
		Timestamp:       ts,
		WorkingSetBytes: u64(st.MemoryWorkingSet),
		UsageBytes:      u64(st.MemoryUsage),
		RssBytes:        u64(st.MemoryRSS),
		PageFaults:      u64(st.PageFaults),
		MajorPageFaults: u64(st.MajorPageFaults),
		Psi:             psi(st.MemoryPressure),
	}
	if st.HasMemoryLimit {
		avail := uint64(0)
		if st.MemoryLimit > st.MemoryWorkingSet {
			avail = st.MemoryLimit - st.MemoryWorkingSet
		}
		mem.AvailableBytes = u64(avail)
	}
	var swap *runtime.SwapUsage
	if st.HasSwap {
		swap = &runtime.SwapUsage{Timestamp: ts, SwapUsageBytes: u64(st.SwapUsage)}
		if st.HasSwapLimit && st.SwapLimit >= st.SwapUsage {
			swap.SwapAvailableBytes = u64(st.SwapLimit - st.SwapUsage)
		}
	}
	var io *runtime.IoUsage
	if st.IOPressure != nil {
		io = &runtime.IoUsage{Timestamp: ts, Psi: psi(st.IOPressure)}
	}
	return cpu, mem, swap, io
}

func containerAttributes(rec store.Container) *runtime.ContainerAttributes {
	return &runtime.ContainerAttributes{
		Id:          rec.ID,
		Metadata:    &runtime.ContainerMetadata{Name: rec.Metadata.Name, Attempt: rec.Metadata.Attempt},
		Labels:      rec.Labels,
		Annotations: rec.Annotations,
	}
}

// Container samples one container. A container that is not running
// has no cgroup: it gets attributes and its writable layer only, as
// kubelet still accounts the disk of exited containers.
func (c *Collector) Container(ctx context.Context, rec store.Container) (*runtime.ContainerStats, *cgroups.Stats) {
	now := c.now()
	out := &runtime.ContainerStats{Attributes: containerAttributes(rec)}
	out.WritableLayer = c.writableLayer(ctx, rec.ID, now)
	if rec.Status.State != store.ContainerRunning {
		return out, nil
	}
	if s, ok := c.recentSample(rec.ID, now); ok {
		var nano *runtime.UInt64Value
		if s.hasNano {
			nano = u64(s.nanoCores)
		}
		out.Cpu, out.Memory, out.Swap, out.Io = usageOf(s.st, s.at, nano)
		return out, &s.st
	}
	path, err := c.CgroupOf(rec)
	if err != nil {
		c.log.DebugContext(ctx, "container cgroup unknown", "container_id", rec.ID, "error", err)
		return out, nil
	}
	st, err := c.cg.Stats(path)
	if err != nil {
		if !cgroups.IsGone(err) {
			c.log.WarnContext(ctx, "read container cgroup", "container_id", rec.ID, "error", err)
		}
		return out, nil
	}
	out.Cpu, out.Memory, out.Swap, out.Io = c.usageFromCgroup(rec.ID, st, now)
	s := ctrSample{st: st, at: now}
	if out.Cpu.UsageNanoCores != nil {
		s.nanoCores, s.hasNano = out.Cpu.UsageNanoCores.Value, true
	}
	c.mu.Lock()
	if !c.gone.has(rec.ID) {
		c.samples[rec.ID] = s
	}
	c.mu.Unlock()
	return out, &st
}

// recentSample returns container id's last cgroup sample while it is
// younger than sampleTTL.
func (c *Collector) recentSample(id string, now time.Time) (ctrSample, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.samples[id]
	if !ok || now.Sub(s.at) >= sampleTTL || now.Before(s.at) {
		return ctrSample{}, false
	}
	return s, true
}

// PodKeyPrefix keeps pod CPU samples apart from container ones.
const PodKeyPrefix = "pod/"

// Pod samples one pod: its own cgroup when kubelet gave it one
// (cgroup_parent), otherwise the sum of its running containers, since the
// configured default parent is shared by every such pod.
func (c *Collector) Pod(ctx context.Context, sb store.Sandbox, ctrs []store.Container) *runtime.LinuxPodSandboxStats {
	now := c.now()
	linux := &runtime.LinuxPodSandboxStats{}
	var sum cgroups.Stats
	running := 0
	var pids []int
	for _, rec := range ctrs {
		cs, raw := c.Container(ctx, rec)
		linux.Containers = append(linux.Containers, cs)
		if raw != nil {
			running++
			addStats(&sum, raw)
			pids = append(pids, rec.Status.Pid)
		}
	}
	own := false
	if parent := sb.Config.GetLinux().GetCgroupParent(); parent != "" && sb.Status.State == store.SandboxReady {
		if st, err := c.cg.Stats(cgroups.Path(parent)); err == nil {
			sum, own = st, true
		}
	}
	if own || running > 0 {
		linux.Cpu, linux.Memory, _, linux.Io = c.usageFromCgroup(PodKeyPrefix+sb.ID, sum, now)
		linux.Process = &runtime.ProcessUsage{Timestamp: now.UnixNano(), ProcessCount: u64(sum.Pids)}
	}
	if sb.Status.State == store.SandboxReady {
		linux.Network = c.podNetwork(ctx, sb, pids, now)
	}
	return linux
}

// addStats sums container samples into a pod total. Limits and pressure
// do not add up, so the sum carries none.
func addStats(sum *cgroups.Stats, c *cgroups.Stats) {
	sum.CPUUsageNanos += c.CPUUsageNanos
	sum.MemoryUsage += c.MemoryUsage
	sum.MemoryWorkingSet += c.MemoryWorkingSet
	sum.MemoryRSS += c.MemoryRSS
	sum.PageFaults += c.PageFaults
	sum.MajorPageFaults += c.MajorPageFaults
	sum.SwapUsage += c.SwapUsage
	sum.HasSwap = sum.HasSwap || c.HasSwap
	sum.Pids += c.Pids
}
