package cgroups

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/containerd/cgroups/v3/cgroup2"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
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
	var inactiveFile, memLimit, memswLimit uint64
	hasMemLimit, hasMemswLimit := false, false
	err = eachKV(filepath.Join(mem, "memory.stat"), func(k []byte, v uint64) {
		switch string(k) {
		case "total_inactive_file":
			inactiveFile = v
		case "total_rss":
			s.MemoryRSS = v
		case "total_pgfault":
			s.PageFaults = v
		case "total_pgmajfault":
			s.MajorPageFaults = v
		case "hierarchical_memory_limit":
			memLimit, hasMemLimit = v, true
		case "hierarchical_memsw_limit":
			memswLimit, hasMemswLimit = v, true
		}
	})
	if err != nil {
		return Stats{}, err
	}
	s.MemoryUsage = usage
	s.MemoryWorkingSet = workingSet(usage, inactiveFile)
	// hierarchical_memory_limit includes the parents' limits; a value at
	// or above the kernel's page-counter maximum means unlimited.
	if hasMemLimit && memLimit < unlimitedV1 {
		s.MemoryLimit, s.HasMemoryLimit = memLimit, true
	}
	if sw, _, err := readUint(filepath.Join(mem, "memory.memsw.usage_in_bytes")); err == nil && sw >= usage {
		s.SwapUsage, s.HasSwap = sw-usage, true
		if hasMemswLimit && memswLimit < unlimitedV1 && s.HasMemoryLimit && memswLimit >= s.MemoryLimit {
			s.SwapLimit, s.HasSwapLimit = memswLimit-s.MemoryLimit, true
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

// statsV2 reads through cgroups/v3's cgroup2.Manager: StatFiltered with
// the CPU, memory, pids and IO masks opens the files the hand-written
// reader did plus memory.peak, memory.swap.peak, pids.max and io.stat,
// for about 20% more CPU (the package doc has the numbers). The library reads a missing
// file as 0 and "max" as MaxUint64, so two things are decided here:
// whether the cgroup is gone, and whether it accounts swap, both from one
// Lstat of memory.swap.current (and of the directory when that is absent).
func (m *Manager) statsV2(path string) (Stats, error) {
	var s Stats
	cg, err := m.v2(path)
	if err != nil {
		return s, err
	}
	mt, err := cg.StatFiltered(cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatPids | cgroup2.StatIO)
	hasSwap, gone := m.swapOrGone(path)
	if gone {
		return s, fmt.Errorf("cgroup %s: %w", path, errdefs.ErrNotFound)
	}
	if err != nil {
		return s, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	if mem := mt.GetMemory(); mem != nil {
		s.MemoryUsage = mem.Usage
		s.MemoryWorkingSet = workingSet(mem.Usage, mem.InactiveFile)
		s.MemoryRSS = mem.Anon
		s.PageFaults = mem.Pgfault
		s.MajorPageFaults = mem.Pgmajfault
		// 0 is a memory.max the library could not read (controller
		// off); a real limit of 0 bytes runs nothing.
		if l := mem.UsageLimit; l != 0 && l != math.MaxUint64 {
			s.MemoryLimit, s.HasMemoryLimit = l, true
		}
		if hasSwap {
			s.SwapUsage, s.HasSwap = mem.SwapUsage, true
			if l := mem.SwapLimit; l != math.MaxUint64 {
				s.SwapLimit, s.HasSwapLimit = l, true
			}
		}
		s.MemoryPressure = pressureV2(mem.PSI)
	}
	if cpu := mt.GetCPU(); cpu != nil {
		s.CPUUsageNanos = cpu.UsageUsec * 1000
		s.CPUPressure = pressureV2(cpu.PSI)
	}
	s.Pids = mt.GetPids().GetCurrent()
	s.IOPressure = pressureV2(mt.GetIo().GetPSI())
	return s, nil
}

// swapOrGone tells whether the v2 cgroup at path has memory.swap.current
// (swap accounting on), and if it has not, whether the cgroup itself is
// gone.
func (m *Manager) swapOrGone(path string) (hasSwap, gone bool) {
	dir := m.dir("", path)
	if _, err := os.Lstat(filepath.Join(dir, "memory.swap.current")); err == nil {
		return true, false
	}
	_, err := os.Lstat(dir)
	return false, errors.Is(err, os.ErrNotExist)
}

// pressureV2 converts the library's PSI; nil when the kernel has none.
func pressureV2(p *v2stats.PSIStats) *Pressure {
	if p == nil {
		return nil
	}
	d := func(x *v2stats.PSIData) PressureData {
		return PressureData{Avg10: x.GetAvg10(), Avg60: x.GetAvg60(), Avg300: x.GetAvg300(), Total: x.GetTotal()}
	}
	return &Pressure{Some: d(p.GetSome()), Full: d(p.GetFull())}
}

func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile > usage {
		return 0
	}
	return usage - inactiveFile
}

// IsGone reports whether err means the cgroup no longer exists.
func IsGone(err error) bool { return errors.Is(err, errdefs.ErrNotFound) }
