package stats

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
)

// The CRI metrics RPCs serve kubelet's CRI-only stats mode (the
// PodAndContainerStatsFromCRI feature): the cadvisor metrics kubelet
// would otherwise scrape, computed here from the cgroups, the pod's
// network namespace, the processes' fds and the writable layer. Names,
// help and labels follow cadvisor, as critest's PodSandbox metrics specs
// expect. Values are whole units of the name (seconds, bytes), since the
// CRI carries integers.

// metricLabels are cadvisor's per-container labels; descriptors add theirs.
var metricLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

type metricDesc struct {
	name, help string
	gauge      bool
	extra      []string
}

var metricDescs = []metricDesc{
	{"container_blkio_device_usage_total", "Blkio device bytes usage", false, []string{"device", "major", "minor", "operation"}},
	{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", false, nil},
	{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", false, nil},
	{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", false, nil},
	{"container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", false, nil},
	{"container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", false, []string{"cpu"}},
	{"container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", false, nil},
	{"container_file_descriptors", "Number of open file descriptors for the container.", true, nil},
	{"container_fs_inodes_free", "Number of available Inodes", true, []string{"device"}},
	{"container_fs_inodes_total", "Number of Inodes", true, []string{"device"}},
	{"container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", true, []string{"device"}},
	{"container_fs_reads_bytes_total", "Cumulative count of bytes read", false, []string{"device"}},
	{"container_fs_reads_total", "Cumulative count of reads completed", false, []string{"device"}},
	{"container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", true, []string{"device"}},
	{"container_fs_writes_bytes_total", "Cumulative count of bytes written", false, []string{"device"}},
	{"container_fs_writes_total", "Cumulative count of writes completed", false, []string{"device"}},
	{"container_last_seen", "Last time a container was seen by the exporter", true, nil},
	{"container_memory_cache", "Number of bytes of page cache memory.", true, nil},
	{"container_memory_failcnt", "Number of memory usage hits limits", false, nil},
	{"container_memory_failures_total", "Cumulative count of memory allocation failures.", false, []string{"failure_type", "scope"}},
	{"container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", true, nil},
	{"container_memory_mapped_file", "Size of memory mapped files in bytes.", true, nil},
	{"container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", true, nil},
	{"container_memory_rss", "Size of RSS in bytes.", true, nil},
	{"container_memory_swap", "Container swap usage in bytes.", true, nil},
	{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", true, nil},
	{"container_memory_working_set_bytes", "Current working set in bytes.", true, nil},
	{"container_network_receive_bytes_total", "Cumulative count of bytes received", false, []string{"interface"}},
	{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", false, []string{"interface"}},
	{"container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", false, []string{"interface"}},
	{"container_network_receive_packets_total", "Cumulative count of packets received", false, []string{"interface"}},
	{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", false, []string{"interface"}},
	{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", false, []string{"interface"}},
	{"container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", false, []string{"interface"}},
	{"container_network_transmit_packets_total", "Cumulative count of packets transmitted", false, []string{"interface"}},
	{"container_oom_events_total", "Count of out of memory events observed for the container", false, nil},
	{"container_processes", "Number of processes running inside the container.", true, nil},
	{"container_sockets", "Number of open sockets for the container.", true, nil},
	{"container_spec_cpu_period", "CPU period of the container.", true, nil},
	{"container_spec_cpu_quota", "CPU quota of the container.", true, nil},
	{"container_spec_cpu_shares", "CPU share of the container.", true, nil},
	{"container_spec_memory_limit_bytes", "Memory limit for the container.", true, nil},
	{"container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", true, nil},
	{"container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", true, nil},
	{"container_start_time_seconds", "Start time of the container since unix epoch in seconds.", true, nil},
	{"container_threads", "Number of threads running inside the container", true, nil},
	{"container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", true, nil},
}

// metricGauge is each descriptor's type, by name.
var metricGauge = func() map[string]bool {
	m := make(map[string]bool, len(metricDescs))
	for _, d := range metricDescs {
		m[d.name] = d.gauge
	}
	return m
}()

// Descriptors describes every metric PodMetrics reports.
func Descriptors() []*runtime.MetricDescriptor {
	out := make([]*runtime.MetricDescriptor, 0, len(metricDescs))
	for _, d := range metricDescs {
		keys := append(append([]string{}, metricLabels...), d.extra...)
		out = append(out, &runtime.MetricDescriptor{Name: d.name, Help: d.help, LabelKeys: keys})
	}
	return out
}

// metricSink collects the metrics of one labelled object.
type metricSink struct {
	ts     int64
	labels []string
	out    []*runtime.Metric
}

func (m *metricSink) add(name string, v uint64, extra ...string) {
	typ := runtime.MetricType_COUNTER
	if metricGauge[name] {
		typ = runtime.MetricType_GAUGE
	}
	lv := append(append(make([]string, 0, len(m.labels)+len(extra)), m.labels...), extra...)
	m.out = append(m.out, &runtime.Metric{Name: name, Timestamp: m.ts, MetricType: typ, LabelValues: lv, Value: &runtime.UInt64Value{Value: v}})
}

// PodMetrics samples a pod and its running containers, ctrs; fs is the
// filesystem of berth's root (RootFs), nil when unknown.
func (c *Collector) PodMetrics(ctx context.Context, sb store.Sandbox, ctrs []store.Container, fs *unix.Statfs_t) *runtime.PodSandboxMetrics {
	now := time.Now()
	pm := &runtime.PodSandboxMetrics{PodSandboxId: sb.ID}
	var pids []int
	for _, rec := range ctrs {
		if rec.Status.State != store.ContainerRunning {
			continue
		}
		sink := &metricSink{ts: now.UnixNano(), labels: []string{rec.Metadata.Name, rec.ID, rec.Image, rec.Name, sb.Metadata.Namespace, sb.Metadata.Name}}
		if !c.containerMetrics(ctx, rec, sink, fs, now) {
			continue
		}
		pids = append(pids, rec.Status.Pid)
		pm.ContainerMetrics = append(pm.ContainerMetrics, &runtime.ContainerMetrics{ContainerId: rec.ID, Metrics: sink.out})
	}
	pod := &metricSink{ts: now.UnixNano(), labels: []string{"POD", sb.ID, "", sb.Name, sb.Metadata.Namespace, sb.Metadata.Name}}
	c.networkMetrics(ctx, sb, pids, pod)
	pm.Metrics = pod.out
	return pm
}

// containerMetrics adds a running container's metrics; false when its
// cgroup is gone (it exited meanwhile).
func (c *Collector) containerMetrics(ctx context.Context, rec store.Container, m *metricSink, fs *unix.Statfs_t, now time.Time) bool {
	path, err := c.CgroupOf(rec)
	if err != nil {
		return false
	}
	st, err := c.cg.Stats(path)
	if err != nil {
		return false
	}
	d, err := c.cg.Detail(path)
	if err != nil {
		return false
	}
	sec := func(ns uint64) uint64 { return ns / uint64(time.Second) }
	m.add("container_cpu_usage_seconds_total", sec(st.CPUUsageNanos), "total")
	m.add("container_cpu_user_seconds_total", sec(d.CPUUserNanos))
	m.add("container_cpu_system_seconds_total", sec(d.CPUSystemNanos))
	m.add("container_cpu_cfs_periods_total", d.Periods)
	m.add("container_cpu_cfs_throttled_periods_total", d.ThrottledPeriods)
	m.add("container_cpu_cfs_throttled_seconds_total", sec(d.ThrottledNanos))
	m.add("container_memory_usage_bytes", st.MemoryUsage)
	m.add("container_memory_working_set_bytes", st.MemoryWorkingSet)
	m.add("container_memory_rss", st.MemoryRSS)
	m.add("container_memory_cache", d.MemoryCache)
	m.add("container_memory_mapped_file", d.MemoryMappedFile)
	m.add("container_memory_kernel_usage", d.MemoryKernel)
	m.add("container_memory_max_usage_bytes", d.MemoryMaxUsage)
	m.add("container_memory_failcnt", d.MemoryFailcnt)
	m.add("container_memory_swap", st.SwapUsage)
	minor := st.PageFaults - min(st.PageFaults, st.MajorPageFaults)
	for _, scope := range []string{"container", "hierarchy"} {
		m.add("container_memory_failures_total", minor, "pgfault", scope)
		m.add("container_memory_failures_total", st.MajorPageFaults, "pgmajfault", scope)
	}
	if n, err := c.cg.OOMKills(path); err == nil {
		m.add("container_oom_events_total", n)
	}
	m.add("container_spec_cpu_shares", d.CPUShares)
	m.add("container_spec_cpu_period", d.CPUPeriod)
	if d.CPUQuota > 0 {
		m.add("container_spec_cpu_quota", uint64(d.CPUQuota))
	}
	m.add("container_spec_memory_limit_bytes", st.MemoryLimit)
	m.add("container_spec_memory_reservation_limit_bytes", d.MemoryReservation)
	m.add("container_spec_memory_swap_limit_bytes", st.SwapLimit)
	m.add("container_processes", uint64(len(d.Procs)))
	m.add("container_threads", d.Threads)
	m.add("container_threads_max", d.PidsMax)
	fds, socks := countFDs(d.Procs)
	m.add("container_file_descriptors", fds)
	m.add("container_sockets", socks)
	m.add("container_start_time_seconds", uint64(rec.Status.StartedAt/int64(time.Second)))
	m.add("container_last_seen", uint64(now.Unix()))
	for _, io := range d.Blkio {
		dev := fmt.Sprintf("%d:%d", io.Major, io.Minor)
		maj, mnr := strconv.FormatUint(io.Major, 10), strconv.FormatUint(io.Minor, 10)
		m.add("container_blkio_device_usage_total", io.ReadBytes, dev, maj, mnr, "Read")
		m.add("container_blkio_device_usage_total", io.WriteBytes, dev, maj, mnr, "Write")
		m.add("container_fs_reads_bytes_total", io.ReadBytes, dev)
		m.add("container_fs_writes_bytes_total", io.WriteBytes, dev)
		m.add("container_fs_reads_total", io.Reads, dev)
		m.add("container_fs_writes_total", io.Writes, dev)
	}
	c.fsMetrics(ctx, rec, m, fs, now)
	return true
}

// fsMetrics reports the writable layer against the filesystem of berth's
// root, where the layer lives.
func (c *Collector) fsMetrics(ctx context.Context, rec store.Container, m *metricSink, fs *unix.Statfs_t, now time.Time) {
	dev := c.root
	if wl := c.writableLayer(ctx, rec.ID, now); wl != nil {
		m.add("container_fs_usage_bytes", wl.GetUsedBytes().GetValue(), dev)
	}
	if fs != nil {
		m.add("container_fs_limit_bytes", fs.Blocks*uint64(fs.Bsize), dev)
		m.add("container_fs_inodes_total", fs.Files, dev)
		m.add("container_fs_inodes_free", fs.Ffree, dev)
	}
}

// RootFs is the filesystem of berth's root dir, nil when unknown.
func (c *Collector) RootFs() *unix.Statfs_t {
	var st unix.Statfs_t
	if err := unix.Statfs(c.root, &st); err != nil {
		return nil
	}
	return &st
}

// networkMetrics reads every interface of the pod's network namespace,
// with the packet and drop counters the CRI stats lack.
func (c *Collector) networkMetrics(ctx context.Context, sb store.Sandbox, pids []int, m *metricSink) {
	if sb.Status.Pod.NetNS == "" {
		return // host network: the node's counters are not the pod's
	}
	var data []byte
	var err error
	for _, pid := range pids {
		if data, err = os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid)); err == nil {
			break
		}
	}
	if data == nil {
		if data, err = readNetDevIn(sb.Status.Pod.NetNS); err != nil {
			c.log.DebugContext(ctx, "read pod network counters", "sandbox_id", sb.ID, "error", err)
			return
		}
	}
	for _, line := range strings.Split(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		f := strings.Fields(rest)
		if !ok || len(f) < 12 {
			continue
		}
		n := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		iface := strings.TrimSpace(name)
		m.add("container_network_receive_bytes_total", n(0), iface)
		m.add("container_network_receive_packets_total", n(1), iface)
		m.add("container_network_receive_errors_total", n(2), iface)
		m.add("container_network_receive_packets_dropped_total", n(3), iface)
		m.add("container_network_transmit_bytes_total", n(8), iface)
		m.add("container_network_transmit_packets_total", n(9), iface)
		m.add("container_network_transmit_errors_total", n(10), iface)
		m.add("container_network_transmit_packets_dropped_total", n(11), iface)
	}
}

// countFDs counts the open fds of pids and how many are sockets.
func countFDs(pids []int) (fds, sockets uint64) {
	for _, pid := range pids {
		dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			fds++
			if t, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(t, "socket:") {
				sockets++
			}
		}
	}
	return fds, sockets
}
