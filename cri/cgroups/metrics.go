package cgroups

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
)

// Detail is what the CRI metrics RPCs (cadvisor-style) need beyond Stats.
// Fields a cgroup version cannot tell stay zero.
type Detail struct {
	// CPUUserNanos and CPUSystemNanos split CPU time by mode.
	CPUUserNanos, CPUSystemNanos uint64
	// CFS bandwidth: elapsed and throttled periods, throttled time.
	Periods, ThrottledPeriods, ThrottledNanos uint64
	// CPU spec: shares (v2 weight converted back), quota (-1: none), period.
	CPUShares, CPUPeriod uint64
	CPUQuota             int64

	MemoryCache, MemoryMappedFile, MemoryKernel uint64
	MemoryMaxUsage, MemoryFailcnt               uint64
	// MemoryReservation is the soft limit; 0 when none.
	MemoryReservation uint64

	// Procs are the process ids in the cgroup; Threads counts its tasks.
	Procs   []int
	Threads uint64
	// PidsMax is pids.max; 0 when unlimited.
	PidsMax uint64

	// Blkio is per-device I/O, from the throttle (v1) or io.stat (v2) files.
	Blkio []DeviceIO
}

// DeviceIO is one block device's I/O counters.
type DeviceIO struct {
	Major, Minor                         uint64
	ReadBytes, WriteBytes, Reads, Writes uint64
}

// unlimited is the v1 "no limit" value rounded to the page size.
const unlimited = 1 << 62

// Detail samples the cgroup at path. A cgroup that is gone is
// errdefs.ErrNotFound; missing optional files leave their fields zero.
func (m *Manager) Detail(path string) (Detail, error) {
	if m.unified {
		return m.detailV2(path)
	}
	return m.detailV1(path)
}

func (m *Manager) detailV1(path string) (Detail, error) {
	var d Detail
	mem := m.dir("memory", path)
	st, err := readKV(filepath.Join(mem, "memory.stat"))
	if err != nil {
		return d, err
	}
	d.MemoryCache, d.MemoryMappedFile = st["total_cache"], st["total_mapped_file"]
	d.MemoryKernel = readOr(filepath.Join(mem, "memory.kmem.usage_in_bytes"))
	d.MemoryMaxUsage = readOr(filepath.Join(mem, "memory.max_usage_in_bytes"))
	d.MemoryFailcnt = readOr(filepath.Join(mem, "memory.failcnt"))
	if r := readOr(filepath.Join(mem, "memory.soft_limit_in_bytes")); r < unlimited {
		d.MemoryReservation = r
	}
	if ticks, err := readKV(filepath.Join(m.dir("cpuacct", path), "cpuacct.stat")); err == nil {
		// USER_HZ is 100 on every Linux ABI that matters.
		d.CPUUserNanos, d.CPUSystemNanos = ticks["user"]*1e7, ticks["system"]*1e7
	}
	cpu := m.dir("cpu", path)
	if cs, err := readKV(filepath.Join(cpu, "cpu.stat")); err == nil {
		d.Periods, d.ThrottledPeriods, d.ThrottledNanos = cs["nr_periods"], cs["nr_throttled"], cs["throttled_time"]
	}
	d.CPUShares = readOr(filepath.Join(cpu, "cpu.shares"))
	d.CPUPeriod = readOr(filepath.Join(cpu, "cpu.cfs_period_us"))
	d.CPUQuota = -1
	if data, err := readFile(filepath.Join(cpu, "cpu.cfs_quota_us")); err == nil {
		if q, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64); err == nil {
			d.CPUQuota = q
		}
	}
	pids := m.dir("pids", path)
	d.Procs = readInts(filepath.Join(pids, "cgroup.procs"))
	d.Threads = uint64(len(readInts(filepath.Join(pids, "tasks"))))
	d.PidsMax = readOr(filepath.Join(pids, "pids.max"))
	blk := m.dir("blkio", path)
	d.Blkio = mergeIO(
		readBlkio(filepath.Join(blk, "blkio.throttle.io_service_bytes_recursive")),
		readBlkio(filepath.Join(blk, "blkio.throttle.io_serviced_recursive")))
	return d, nil
}

// detailV2 takes the counters from cgroups/v3 (cpu.stat, memory.events,
// pids, io.stat) and reads by hand what the library does not carry:
// memory.stat's "kernel" (cgroup2/stats.MemoryStat has no field for it,
// so memory.stat and memory.peak are read here instead of by the
// library's StatMemory, once), the settings (memory.low, cpu.weight,
// cpu.max), and the pid lists (the library's Procs walks and Lstats every
// file of the directory to find cgroup.procs).
func (m *Manager) detailV2(path string) (Detail, error) {
	var d Detail
	dir := m.dir("", path)
	st, err := readKV(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return d, err
	}
	d.MemoryCache, d.MemoryMappedFile, d.MemoryKernel = st["file"], st["file_mapped"], st["kernel"]
	d.MemoryMaxUsage = readOr(filepath.Join(dir, "memory.peak"))
	d.MemoryReservation = readOr(filepath.Join(dir, "memory.low"))
	cg, err := m.v2(path)
	if err != nil {
		return d, err
	}
	mt, err := cg.StatFiltered(cgroup2.StatCPU | cgroup2.StatMemoryEvents | cgroup2.StatPids | cgroup2.StatIO)
	if err != nil {
		return d, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	d.MemoryFailcnt = mt.GetMemoryEvents().GetMax()
	if cs := mt.GetCPU(); cs != nil {
		d.CPUUserNanos, d.CPUSystemNanos = cs.UserUsec*1000, cs.SystemUsec*1000
		d.Periods, d.ThrottledPeriods, d.ThrottledNanos = cs.NrPeriods, cs.NrThrottled, cs.ThrottledUsec*1000
	}
	if l := mt.GetPids().GetLimit(); l != math.MaxUint64 {
		d.PidsMax = l
	}
	for _, e := range mt.GetIo().GetUsage() {
		d.Blkio = append(d.Blkio, DeviceIO{
			Major: e.Major, Minor: e.Minor,
			ReadBytes: e.Rbytes, WriteBytes: e.Wbytes, Reads: e.Rios, Writes: e.Wios,
		})
	}
	if w := readOr(filepath.Join(dir, "cpu.weight")); w > 0 {
		// The inverse of runc's shares -> weight conversion.
		d.CPUShares = 2 + (w-1)*262142/9999
	}
	d.CPUQuota = -1
	if data, err := readFile(filepath.Join(dir, "cpu.max")); err == nil {
		f := strings.Fields(string(data))
		if len(f) == 2 {
			if q, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				d.CPUQuota = q
			}
			d.CPUPeriod, _ = strconv.ParseUint(f[1], 10, 64)
		}
	}
	d.Procs = readInts(filepath.Join(dir, "cgroup.procs"))
	d.Threads = uint64(len(readInts(filepath.Join(dir, "cgroup.threads"))))
	return d, nil
}

// readOr reads a one-number file, 0 when missing, unreadable or "max".
func readOr(p string) uint64 {
	n, _, _ := readUint(p)
	return n
}

func readInts(p string) []int {
	data, err := readFile(p)
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// readBlkio parses v1 "MAJ:MIN Read|Write|... N" lines into reads (Read)
// and writes (Write) per device, in the order first seen.
func readBlkio(p string) []DeviceIO {
	data, err := readFile(p)
	if err != nil {
		return nil
	}
	var out []DeviceIO
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		maj, min, ok := parseDev(f[0])
		v, err := strconv.ParseUint(f[2], 10, 64)
		if !ok || err != nil {
			continue
		}
		i := devIndex(&out, maj, min)
		switch f[1] {
		case "Read":
			out[i].Reads = v
		case "Write":
			out[i].Writes = v
		}
	}
	return out
}

// mergeIO combines the bytes file (whose Reads/Writes are bytes) with the
// operations file.
func mergeIO(bytesIO, ops []DeviceIO) []DeviceIO {
	out := make([]DeviceIO, 0, len(bytesIO))
	for _, b := range bytesIO {
		d := DeviceIO{Major: b.Major, Minor: b.Minor, ReadBytes: b.Reads, WriteBytes: b.Writes}
		for _, o := range ops {
			if o.Major == b.Major && o.Minor == b.Minor {
				d.Reads, d.Writes = o.Reads, o.Writes
			}
		}
		out = append(out, d)
	}
	return out
}

func parseDev(s string) (maj, min uint64, ok bool) {
	a, b, found := strings.Cut(s, ":")
	if !found {
		return 0, 0, false
	}
	maj, err1 := strconv.ParseUint(a, 10, 64)
	min, err2 := strconv.ParseUint(b, 10, 64)
	return maj, min, err1 == nil && err2 == nil
}

func devIndex(out *[]DeviceIO, maj, min uint64) int {
	for i, d := range *out {
		if d.Major == maj && d.Minor == min {
			return i
		}
	}
	*out = append(*out, DeviceIO{Major: maj, Minor: min})
	return len(*out) - 1
}
