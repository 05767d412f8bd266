package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/cgroups"
	"github.com/berth-runtime/berth/cri/store"
)

// statsCollector keeps what stats need between calls: each object's
// cgroup path (read once from its bundle), the previous CPU sample of each
// (usage_nano_cores is a rate) and writable-layer sizes, whose directory
// walk is too slow to repeat on every 10 s poll of every container.
type statsCollector struct {
	cg *cgroups.Manager

	mu      sync.Mutex             // guards the maps below
	paths   map[string]specInfo    // container ID -> what its spec says
	cpu     map[string]cpuSample   // container or "pod/"+sandbox ID -> last sample
	layers  map[string]layerSample // container ID -> writable layer usage
	fsMount string                 // mountpoint of the root dir, once known
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
)

func newStatsCollector(cg *cgroups.Manager) *statsCollector {
	return &statsCollector{
		cg:     cg,
		paths:  map[string]specInfo{},
		cpu:    map[string]cpuSample{},
		layers: map[string]layerSample{},
	}
}

// specInfo is what berthd reads back from a container's config.json.
type specInfo struct {
	cgroup string // cgroup path below the hierarchy root
	user   *runtime.ContainerUser
}

// spec returns what the container's bundle spec says, read once.
func (c *statsCollector) spec(rec store.Container) (specInfo, error) {
	c.mu.Lock()
	info, ok := c.paths[rec.ID]
	c.mu.Unlock()
	if ok {
		return info, nil
	}
	data, err := os.ReadFile(filepath.Join(rec.Bundle, "config.json"))
	if err != nil {
		return specInfo{}, fmt.Errorf("read spec of container %q: %w", rec.ID, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return specInfo{}, fmt.Errorf("decode spec of container %q: %w", rec.ID, err)
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
	c.paths[rec.ID] = info
	c.mu.Unlock()
	return info, nil
}

// cgroupOf returns the container's cgroup path as its spec names it.
func (c *statsCollector) cgroupOf(rec store.Container) (string, error) {
	info, err := c.spec(rec)
	if err != nil {
		return "", err
	}
	if info.cgroup == "" {
		return "", fmt.Errorf("spec of container %q names no cgroup", rec.ID)
	}
	return info.cgroup, nil
}

// containerUser is the identity the container's process runs as
// (ContainerStatus.user), nil when the bundle is gone.
func (s *Server) containerUser(rec store.Container) *runtime.ContainerUser {
	info, err := s.stats.spec(rec)
	if err != nil {
		return nil
	}
	return info.user
}

// nanoCores turns a cumulative CPU reading into a rate against the
// previous sample of key; nil on the first sample.
func (c *statsCollector) nanoCores(key string, usage uint64, now time.Time) *runtime.UInt64Value {
	c.mu.Lock()
	defer c.mu.Unlock()
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

// forget drops what is cached about objects not in keep.
func (c *statsCollector) forget(keep map[string]bool) {
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
func (c *statsCollector) usageFromCgroup(key string, st cgroups.Stats, now time.Time) (*runtime.CpuUsage, *runtime.MemoryUsage, *runtime.SwapUsage, *runtime.IoUsage) {
	ts := now.UnixNano()
	cpu := &runtime.CpuUsage{
		Timestamp:            ts,
		UsageCoreNanoSeconds: u64(st.CPUUsageNanos),
		UsageNanoCores:       c.nanoCores(key, st.CPUUsageNanos, now),
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

// containerStats samples one container. A container that is not running
// has no cgroup: it gets attributes and its writable layer only, as
// kubelet still accounts the disk of exited containers.
func (s *Server) containerStats(ctx context.Context, rec store.Container) (*runtime.ContainerStats, *cgroups.Stats) {
	now := time.Now()
	out := &runtime.ContainerStats{Attributes: containerAttributes(rec)}
	out.WritableLayer = s.writableLayer(rec.ID, now)
	if rec.Status.State != store.ContainerRunning {
		return out, nil
	}
	path, err := s.stats.cgroupOf(rec)
	if err != nil {
		s.log.DebugContext(ctx, "container cgroup unknown", "container_id", rec.ID, "error", err)
		return out, nil
	}
	st, err := s.stats.cg.Stats(path)
	if err != nil {
		if !cgroups.IsGone(err) {
			s.log.WarnContext(ctx, "read container cgroup", "container_id", rec.ID, "error", err)
		}
		return out, nil
	}
	out.Cpu, out.Memory, out.Swap, out.Io = s.stats.usageFromCgroup(rec.ID, st, now)
	return out, &st
}

func matchContainerStats(f *runtime.ContainerStatsFilter, c store.Container) bool {
	if f == nil {
		return true
	}
	if f.GetId() != "" && f.GetId() != c.ID {
		return false
	}
	if f.GetPodSandboxId() != "" && f.GetPodSandboxId() != c.SandboxID {
		return false
	}
	return matchLabels(f.GetLabelSelector(), c.Labels)
}

// ContainerStats reports one container's usage; an unknown ID is NotFound.
func (s *Server) ContainerStats(ctx context.Context, r *runtime.ContainerStatsRequest) (*runtime.ContainerStatsResponse, error) {
	c, err := s.store.Container(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	st, _ := s.containerStats(ctx, c)
	return &runtime.ContainerStatsResponse{Stats: st}, nil
}

func (s *Server) listContainerStats(ctx context.Context, f *runtime.ContainerStatsFilter) []*runtime.ContainerStats {
	all := s.store.Containers()
	keep := make(map[string]bool, 2*len(all))
	var out []*runtime.ContainerStats
	for _, c := range all {
		keep[c.ID] = true
		if !matchContainerStats(f, c) {
			continue
		}
		st, _ := s.containerStats(ctx, c)
		out = append(out, st)
	}
	if f == nil || (f.GetId() == "" && f.GetPodSandboxId() == "") {
		for _, sb := range s.store.Sandboxes() {
			keep[podKeyPrefix+sb.ID] = true
		}
		s.stats.forget(keep)
	}
	return out
}

// ListContainerStats reports the usage of every matching container.
func (s *Server) ListContainerStats(ctx context.Context, r *runtime.ListContainerStatsRequest) (*runtime.ListContainerStatsResponse, error) {
	return &runtime.ListContainerStatsResponse{Stats: s.listContainerStats(ctx, r.GetFilter())}, nil
}

// StreamContainerStats sends the same items as ListContainerStats in chunks.
func (s *Server) StreamContainerStats(r *runtime.StreamContainerStatsRequest, stream runtime.RuntimeService_StreamContainerStatsServer) error {
	items := s.listContainerStats(stream.Context(), r.GetFilter())
	return sendChunked(items, func(chunk []*runtime.ContainerStats) error {
		return stream.Send(&runtime.StreamContainerStatsResponse{ContainerStats: chunk})
	})
}

// podKeyPrefix keeps pod CPU samples apart from container ones.
const podKeyPrefix = "pod/"

// podStats samples one pod: its own cgroup when kubelet gave it one
// (cgroup_parent), otherwise the sum of its running containers, since the
// configured default parent is shared by every such pod.
func (s *Server) podStats(ctx context.Context, sb store.Sandbox) (*runtime.PodSandboxStats, error) {
	var cfg runtime.PodSandboxConfig
	if err := proto.Unmarshal(sb.Config, &cfg); err != nil {
		return nil, fmt.Errorf("decode config of sandbox %q: %w", sb.ID, err)
	}
	now := time.Now()
	linux := &runtime.LinuxPodSandboxStats{}
	var sum cgroups.Stats
	running := 0
	var pids []int
	for _, c := range s.store.ContainersOf(sb.ID) {
		cs, raw := s.containerStats(ctx, c)
		linux.Containers = append(linux.Containers, cs)
		if raw != nil {
			running++
			addStats(&sum, raw)
			pids = append(pids, c.Status.Pid)
		}
	}
	own := false
	if parent := cfg.GetLinux().GetCgroupParent(); parent != "" && sb.Status.State == store.SandboxReady {
		if st, err := s.stats.cg.Stats(cgroups.Path(parent)); err == nil {
			sum, own = st, true
		}
	}
	if own || running > 0 {
		linux.Cpu, linux.Memory, _, linux.Io = s.stats.usageFromCgroup(podKeyPrefix+sb.ID, sum, now)
		linux.Process = &runtime.ProcessUsage{Timestamp: now.UnixNano(), ProcessCount: u64(sum.Pids)}
	}
	if sb.Status.State == store.SandboxReady {
		linux.Network = s.podNetwork(ctx, sb, pids, now)
	}
	return &runtime.PodSandboxStats{
		Attributes: &runtime.PodSandboxAttributes{
			Id: sb.ID, Metadata: podMetadata(sb), Labels: sb.Labels, Annotations: sb.Annotations,
		},
		Linux: linux,
	}, nil
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

// PodSandboxStats reports one pod's usage; an unknown ID is NotFound.
func (s *Server) PodSandboxStats(ctx context.Context, r *runtime.PodSandboxStatsRequest) (*runtime.PodSandboxStatsResponse, error) {
	sb, err := s.store.Sandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	st, err := s.podStats(ctx, sb)
	if err != nil {
		return nil, err
	}
	return &runtime.PodSandboxStatsResponse{Stats: st}, nil
}

func (s *Server) listPodStats(ctx context.Context, f *runtime.PodSandboxStatsFilter) []*runtime.PodSandboxStats {
	var out []*runtime.PodSandboxStats
	for _, sb := range s.store.Sandboxes() {
		if f.GetId() != "" && f.GetId() != sb.ID {
			continue
		}
		if !matchLabels(f.GetLabelSelector(), sb.Labels) {
			continue
		}
		st, err := s.podStats(ctx, sb)
		if err != nil {
			s.log.WarnContext(ctx, "pod stats", "sandbox_id", sb.ID, "error", err)
			continue
		}
		out = append(out, st)
	}
	return out
}

// ListPodSandboxStats reports the usage of every matching pod.
func (s *Server) ListPodSandboxStats(ctx context.Context, r *runtime.ListPodSandboxStatsRequest) (*runtime.ListPodSandboxStatsResponse, error) {
	return &runtime.ListPodSandboxStatsResponse{Stats: s.listPodStats(ctx, r.GetFilter())}, nil
}

// StreamPodSandboxStats sends the same items as ListPodSandboxStats in chunks.
func (s *Server) StreamPodSandboxStats(r *runtime.StreamPodSandboxStatsRequest, stream runtime.RuntimeService_StreamPodSandboxStatsServer) error {
	items := s.listPodStats(stream.Context(), r.GetFilter())
	return sendChunked(items, func(chunk []*runtime.PodSandboxStats) error {
		return stream.Send(&runtime.StreamPodSandboxStatsResponse{PodSandboxStats: chunk})
	})
}
