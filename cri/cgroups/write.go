package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Update writes the CPU, memory, cpuset, hugepage and (v2) unified
// settings of r to an existing cgroup: what the OCI runtime does for a
// container's cgroup, here for a pod's, which no runtime manages. Unset
// fields are left alone. The cgroup must exist (errdefs.ErrNotFound
// otherwise); a control file that is missing (controller off) is
// errdefs.ErrFailedPrecondition; a value the kernel refuses is
// errdefs.ErrInvalidArgument.
func (m *Manager) Update(path string, r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	if !m.Exists(path) {
		return fmt.Errorf("cgroup %s: %w", path, errdefs.ErrNotFound)
	}
	if m.unified {
		return m.updateV2(path, r)
	}
	if len(r.Unified) > 0 {
		return fmt.Errorf("unified resources on a cgroup v1 host: %w", errdefs.ErrInvalidArgument)
	}
	return m.updateV1(path, r)
}

func (m *Manager) updateV1(path string, r *specs.LinuxResources) error {
	if c := r.CPU; c != nil {
		cpu := m.dir("cpu", path)
		if c.Shares != nil && *c.Shares != 0 {
			if err := writeFile(cpu, "cpu.shares", strconv.FormatUint(*c.Shares, 10)); err != nil {
				return err
			}
		}
		if err := quotaPeriodV1(cpu, c.Quota, c.Period); err != nil {
			return err
		}
		if err := m.cpuset(path, c); err != nil {
			return err
		}
	}
	if mem := r.Memory; mem != nil && mem.Limit != nil {
		if err := memoryV1(m.dir("memory", path), *mem.Limit, mem.Swap); err != nil {
			return err
		}
	}
	for _, h := range r.HugepageLimits {
		if err := writeFile(m.dir("hugetlb", path), "hugetlb."+h.Pagesize+".limit_in_bytes", strconv.FormatUint(h.Limit, 10)); err != nil {
			return err
		}
	}
	return nil
}

// quotaPeriodV1 writes the CFS period and quota. The kernel checks the
// quota/period pair against the children's on every write, so when the
// period first fails, the quota goes first (runc does the same dance).
func quotaPeriodV1(dir string, quota *int64, period *uint64) error {
	writeQuota := func() error {
		if quota == nil || *quota == 0 {
			return nil
		}
		return writeFile(dir, "cpu.cfs_quota_us", strconv.FormatInt(*quota, 10))
	}
	if period == nil || *period == 0 {
		return writeQuota()
	}
	p := strconv.FormatUint(*period, 10)
	if err := writeFile(dir, "cpu.cfs_period_us", p); err != nil {
		if !errors.Is(err, errdefs.ErrInvalidArgument) || quota == nil {
			return err
		}
		if err := writeQuota(); err != nil {
			return err
		}
		return writeFile(dir, "cpu.cfs_period_us", p)
	}
	return writeQuota()
}

// memoryV1 writes the memory limit and, when asked, memory+swap. The
// kernel wants limit <= memsw at every step, so the order depends on
// whether the limit grows.
func memoryV1(dir string, limit int64, swap *int64) error {
	l := strconv.FormatInt(limit, 10)
	if swap == nil || *swap == 0 {
		return writeFile(dir, "memory.limit_in_bytes", l)
	}
	sw := strconv.FormatInt(*swap, 10)
	cur, _, err := readUint(filepath.Join(dir, "memory.limit_in_bytes"))
	if err != nil {
		return err
	}
	first, second := [2]string{"memory.limit_in_bytes", l}, [2]string{"memory.memsw.limit_in_bytes", sw}
	if limit < 0 || uint64(limit) > cur {
		first, second = second, first
	}
	if err := writeFile(dir, first[0], first[1]); err != nil {
		return err
	}
	return writeFile(dir, second[0], second[1])
}

func (m *Manager) cpuset(path string, c *specs.LinuxCPU) error {
	for file, v := range map[string]string{"cpuset.cpus": c.Cpus, "cpuset.mems": c.Mems} {
		if v == "" {
			continue
		}
		if err := writeFile(m.dir("cpuset", path), file, v); err != nil {
			return err
		}
	}
	return nil
}

// updateV2 writes through cgroups/v3's cgroup2.Manager.Update what its
// Resources can say, built here rather than by cgroup2.ToResources, which
// differs from berth's update semantics in three ways: it converts shares
// with crun's quadratic formula (berth writes the linear SharesToWeight,
// which Detail inverts), drops a quota sent without a period and
// writes a period without a quota as "max <period>" (berth keeps the half
// r leaves unset), and subtracts the memory limit from an unlimited (-1)
// swap. Two writes stay by hand: "max" for an unlimited memory or swap
// limit (cgroup2.Memory holds an int64, and the kernel refuses "-1"), and
// r.Unified, which cgroup2.Resources has no field for.
func (m *Manager) updateV2(path string, r *specs.LinuxResources) error {
	dir := m.dir("", path)
	var res cgroup2.Resources
	var unlimited []string // files to set to "max"
	if c := r.CPU; c != nil {
		cpu := &cgroup2.CPU{Cpus: c.Cpus, Mems: c.Mems}
		if c.Shares != nil && *c.Shares != 0 {
			w := SharesToWeight(*c.Shares)
			cpu.Weight = &w
		}
		max, err := cpuMaxV2(dir, c.Quota, c.Period)
		if err != nil {
			return err
		}
		cpu.Max = cgroup2.CPUMax(max)
		res.CPU = cpu
	}
	if mem := r.Memory; mem != nil && mem.Limit != nil {
		res.Memory = &cgroup2.Memory{}
		if *mem.Limit < 0 {
			unlimited = append(unlimited, "memory.max")
		} else {
			res.Memory.Max = mem.Limit
		}
		// v2 limits swap alone; the OCI value is memory+swap.
		if mem.Swap != nil && *mem.Swap != 0 {
			sw := *mem.Swap
			switch {
			case sw < 0:
				unlimited = append(unlimited, "memory.swap.max")
			case *mem.Limit > 0:
				sw -= *mem.Limit
				fallthrough
			default:
				res.Memory.Swap = &sw
			}
		}
	}
	if len(r.HugepageLimits) > 0 {
		h := make(cgroup2.HugeTlb, 0, len(r.HugepageLimits))
		for _, l := range r.HugepageLimits {
			h = append(h, cgroup2.HugeTlbEntry{HugePageSize: l.Pagesize, Limit: l.Limit})
		}
		res.HugeTlb = &h
	}
	cg, err := m.v2(path)
	if err != nil {
		return err
	}
	if err := cg.Update(&res); err != nil {
		return writeError(err)
	}
	for _, f := range unlimited {
		if err := writeFile(dir, f, "max"); err != nil {
			return err
		}
	}
	for k, v := range r.Unified {
		if k == "" || strings.ContainsAny(k, "/\x00") || k == "." || k == ".." {
			return fmt.Errorf("unified key %q is not a cgroup file name: %w", k, errdefs.ErrInvalidArgument)
		}
		if err := writeFile(dir, k, v); err != nil {
			return err
		}
	}
	return nil
}

// cpuMaxV2 returns the cpu.max to write, keeping the half of "quota
// period" that r leaves unset; "" when r sets neither.
func cpuMaxV2(dir string, quota *int64, period *uint64) (string, error) {
	if (quota == nil || *quota == 0) && (period == nil || *period == 0) {
		return "", nil
	}
	data, err := readFile(filepath.Join(dir, "cpu.max"))
	if err != nil {
		return "", err
	}
	cur := strings.Fields(string(data))
	if len(cur) != 2 {
		return "", fmt.Errorf("parse %s/cpu.max %q: %w", dir, data, errdefs.ErrUnknown)
	}
	q, p := cur[0], cur[1]
	if quota != nil && *quota != 0 {
		q = maxOr(*quota)
	}
	if period != nil && *period != 0 {
		p = strconv.FormatUint(*period, 10)
	}
	return q + " " + p, nil
}

// SharesToWeight converts cgroup v1 cpu.shares [2, 262144] to v2
// cpu.weight [1, 10000], the linear mapping kubelet and runc use.
func SharesToWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	shares = min(max(shares, 2), 262144)
	return 1 + ((shares-2)*9999)/262142
}

// maxOr renders a limit where -1 (or any negative) means unlimited.
func maxOr(v int64) string {
	if v < 0 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

// writeFile writes one cgroup control file; the file must exist (cgroupfs
// files cannot be created).
func writeFile(dir, name, value string) error {
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return writeError(err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return writeError(fmt.Errorf("write %q: %w", value, err))
	}
	return nil
}

// writeError classifies a failed write of a control file, by berth or by
// cgroups/v3 (whose errors are the *os.PathError of os.WriteFile): a file
// that does not exist in a cgroup that does (Update checked) is a
// controller that is off, whether opening it failed with ENOENT or, when
// it was opened with O_CREAT as cgroups/v3 does, with EACCES; the
// kernel's EINVAL/ERANGE mean a value out of bounds, EBUSY a value the
// cgroup's state refuses.
func writeError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) && (errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission)) {
		if _, serr := os.Lstat(pe.Path); errors.Is(serr, os.ErrNotExist) {
			return fmt.Errorf("cgroup file %s missing (controller not enabled?): %w", pe.Path, errdefs.ErrFailedPrecondition)
		}
	}
	switch {
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ERANGE):
		return fmt.Errorf("cgroup write: %v: %w", err, errdefs.ErrInvalidArgument)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("cgroup write: %v: %w", err, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("cgroup write: %w", err)
}
