package cgroups

import (
	"bufio"
	"bytes"
	"errors"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// Stats is one sample of a cgroup's usage. Fields the cgroup version
// cannot tell are left zero, with the matching Has* false.
type Stats struct {
	// CPUUsageNanos is cumulative CPU time of every task, in nanoseconds.
	CPUUsageNanos uint64

	// MemoryUsage is usage including page cache (memory.usage_in_bytes,
	// memory.current).
	MemoryUsage uint64
	// MemoryWorkingSet is usage minus inactive file pages, what kubelet
	// evicts on (cadvisor's definition).
	MemoryWorkingSet uint64
	MemoryRSS        uint64
	PageFaults       uint64
	MajorPageFaults  uint64
	// MemoryLimit is the cgroup's limit; 0 with HasMemoryLimit false when
	// unlimited.
	MemoryLimit    uint64
	HasMemoryLimit bool

	// SwapUsage and SwapLimit (v1: memsw minus memory) are valid when
	// HasSwap.
	SwapUsage, SwapLimit  uint64
	HasSwap, HasSwapLimit bool

	// Pids is the number of tasks (pids.current).
	Pids uint64

	// Pressure is PSI per resource (v2 with CONFIG_PSI only).
	CPUPressure, MemoryPressure, IOPressure *Pressure
}

// Pressure is one pressure file (cpu.pressure, ...).
type Pressure struct {
	Some, Full PressureData
}

// PressureData is one line of a pressure file; Total is in microseconds.
type PressureData struct {
	Avg10, Avg60, Avg300 float64
	Total                uint64
}

// Stats samples the cgroup at path. A cgroup that is gone (the container
// exited meanwhile) is errdefs.ErrNotFound.
func (m *Manager) Stats(path string) (Stats, error) {
	if m.unified {
		return m.statsV2(path)
	}
	return m.statsV1(path)
}

func (m *Manager) statsV1(path string) (Stats, error) {
	var s Stats
	mem := m.dir("memory", path)
	usage, _, err := readUint(filepath.Join(mem, "memory.usage_in_bytes"))
	if err != nil {
		return s, err
	}
	st, err := readKV(filepath.Join(mem, "memory.stat"))
	if err != nil {
		return s, err
	}
	s.MemoryUsage = usage
	s.MemoryWorkingSet = workingSet(usage, st["total_inactive_file"])
	s.MemoryRSS = st["total_rss"]
	s.PageFaults = st["total_pgfault"]
	s.MajorPageFaults = st["total_pgmajfault"]
	// hierarchical_memory_limit includes the parents' limits; a value at
	// or above the kernel's page-counter maximum means unlimited.
	if l, ok := st["hierarchical_memory_limit"]; ok && l < unlimitedV1 {
		s.MemoryLimit, s.HasMemoryLimit = l, true
	}
	if sw, _, err := readUint(filepath.Join(mem, "memory.memsw.usage_in_bytes")); err == nil && sw >= usage {
		s.SwapUsage, s.HasSwap = sw-usage, true
		if l, ok := st["hierarchical_memsw_limit"]; ok && l < unlimitedV1 && s.HasMemoryLimit && l >= s.MemoryLimit {
			s.SwapLimit, s.HasSwapLimit = l-s.MemoryLimit, true
		}
	}
	if cpu, _, err := readUint(filepath.Join(m.dir("cpuacct", path), "cpuacct.usage")); err == nil {
		s.CPUUsageNanos = cpu
	} else if !errdefs.IsNotFound(err) {
		return s, err
	}
	if n, _, err := readUint(filepath.Join(m.dir("pids", path), "pids.current")); err == nil {
		s.Pids = n
	}
	return s, nil
}

// unlimitedV1 is the smallest value v1 reports for "no limit"
// (PAGE_COUNTER_MAX rounded to pages is just below 2^63).
const unlimitedV1 = 1 << 62

func (m *Manager) statsV2(path string) (Stats, error) {
	var s Stats
	dir := filepath.Join(m.root, path)
	usage, _, err := readUint(filepath.Join(dir, "memory.current"))
	if err != nil {
		return s, err
	}
	st, err := readKV(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return s, err
	}
	s.MemoryUsage = usage
	s.MemoryWorkingSet = workingSet(usage, st["inactive_file"])
	s.MemoryRSS = st["anon"]
	s.PageFaults = st["pgfault"]
	s.MajorPageFaults = st["pgmajfault"]
	if l, ok, err := readUint(filepath.Join(dir, "memory.max")); err == nil && ok {
		s.MemoryLimit, s.HasMemoryLimit = l, true
	}
	if sw, _, err := readUint(filepath.Join(dir, "memory.swap.current")); err == nil {
		s.SwapUsage, s.HasSwap = sw, true
		if l, ok, err := readUint(filepath.Join(dir, "memory.swap.max")); err == nil && ok {
			s.SwapLimit, s.HasSwapLimit = l, true
		}
	}
	cpu, err := readKV(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return s, err
	}
	s.CPUUsageNanos = cpu["usage_usec"] * 1000
	if n, _, err := readUint(filepath.Join(dir, "pids.current")); err == nil {
		s.Pids = n
	}
	s.CPUPressure = readPressure(filepath.Join(dir, "cpu.pressure"))
	s.MemoryPressure = readPressure(filepath.Join(dir, "memory.pressure"))
	s.IOPressure = readPressure(filepath.Join(dir, "io.pressure"))
	return s, nil
}

func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile > usage {
		return 0
	}
	return usage - inactiveFile
}

// readPressure parses a PSI file; nil when the kernel has no PSI (the
// file is absent, or reading it fails with EOPNOTSUPP when psi=0).
func readPressure(p string) *Pressure {
	data, err := readFile(p)
	if err != nil {
		return nil
	}
	var out Pressure
	found := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		var d *PressureData
		switch fields[0] {
		case "some":
			d = &out.Some
		case "full":
			d = &out.Full
		default:
			continue
		}
		found = true
		for _, f := range fields[1:] {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "avg10":
				d.Avg10, _ = strconv.ParseFloat(v, 64)
			case "avg60":
				d.Avg60, _ = strconv.ParseFloat(v, 64)
			case "avg300":
				d.Avg300, _ = strconv.ParseFloat(v, 64)
			case "total":
				d.Total, _ = strconv.ParseUint(v, 10, 64)
			}
		}
	}
	if !found {
		return nil
	}
	return &out
}

// IsGone reports whether err means the cgroup no longer exists.
func IsGone(err error) bool { return errors.Is(err, errdefs.ErrNotFound) }
