package api

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// ProcStat is what berth reads of /proc/<pid>/stat (proc(5)).
type ProcStat struct {
	// State is field 3: R, S, D, T, t, Z (zombie), X (dead), ...
	State byte
	// PPid is field 4, the parent's pid.
	PPid int
	// StartTime is field 22, clock ticks after boot: with the pid, it
	// names one process, since a reused pid has another start time.
	StartTime uint64
}

// Gone reports a process that has exited: a zombie or a dead one.
func (s ProcStat) Gone() bool { return s.State == 'Z' || s.State == 'X' }

// ReadProcStat reads /proc/<pid>/stat: errdefs.ErrNotFound when there is
// no such process, errdefs.ErrDataLoss when the file does not parse.
func ReadProcStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) {
		return ProcStat{}, fmt.Errorf("process %d: %w", pid, errdefs.ErrNotFound)
	}
	if err != nil {
		return ProcStat{}, fmt.Errorf("read stat of process %d: %w", pid, err)
	}
	st, err := ParseProcStat(b)
	if err != nil {
		return ProcStat{}, fmt.Errorf("parse stat of process %d: %w", pid, err)
	}
	return st, nil
}

// ParseProcStat parses the contents of a /proc/<pid>/stat file. The
// command name (field 2) may hold spaces and parentheses, so the fields
// are counted after its last ')'.
func ParseProcStat(b []byte) (ProcStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ProcStat{}, fmt.Errorf("no command name: %w", errdefs.ErrDataLoss)
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state).
	const ppidField, startField = 4 - 3, 22 - 3
	if len(fields) <= startField || len(fields[0]) != 1 {
		return ProcStat{}, fmt.Errorf("%d fields after the command name: %w", len(fields), errdefs.ErrDataLoss)
	}
	ppid, err := strconv.Atoi(string(fields[ppidField]))
	if err != nil {
		return ProcStat{}, fmt.Errorf("parent pid %q: %w", fields[ppidField], errdefs.ErrDataLoss)
	}
	start, err := strconv.ParseUint(string(fields[startField]), 10, 64)
	if err != nil {
		return ProcStat{}, fmt.Errorf("start time %q: %w", fields[startField], errdefs.ErrDataLoss)
	}
	return ProcStat{State: fields[0][0], PPid: ppid, StartTime: start}, nil
}

// ProcessStartTime returns field 22 (starttime) of /proc/PID/stat.
func ProcessStartTime(pid int) (uint64, error) {
	st, err := ReadProcStat(pid)
	if err != nil {
		return 0, err
	}
	return st.StartTime, nil
}

// ProcStatus is what berth reads of /proc/<pid>/status (proc(5)): the
// task's credentials and privileges.
type ProcStatus struct {
	// UIDs and GIDs are the real, effective, saved and file system ids.
	UIDs, GIDs []uint32
	// CapEff and CapBnd are the effective and bounding capability sets
	// (bit i is capability i; see CapabilitiesOf).
	CapEff, CapBnd uint64
	// Seccomp is 0 (none), 1 (strict) or 2 (filter).
	Seccomp    int
	NoNewPrivs bool
	seen       map[string]bool
}

// procStatusFields are the fields ParseProcStatus reads, in file order.
var procStatusFields = []string{"Uid", "Gid", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp"}

// Lacks lists the fields of ProcStatus the parsed file did not have (a
// kernel too old to report them): their values are zero, not read.
func (s ProcStatus) Lacks() []string {
	var out []string
	for _, f := range procStatusFields {
		if !s.seen[f] {
			out = append(out, f)
		}
	}
	return out
}

// ParseProcStatus reads the fields of ProcStatus from a /proc/<pid>/status
// file; one that does not parse is an error, a missing one is in Lacks.
func ParseProcStatus(r io.Reader) (ProcStatus, error) {
	st := ProcStatus{seen: map[string]bool{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "CapEff":
			st.CapEff, err = strconv.ParseUint(v, 16, 64)
		case "CapBnd":
			st.CapBnd, err = strconv.ParseUint(v, 16, 64)
		case "Seccomp":
			st.Seccomp, err = strconv.Atoi(v)
		case "Uid":
			st.UIDs, err = parseIDs(v)
		case "Gid":
			st.GIDs, err = parseIDs(v)
		case "NoNewPrivs":
			var n int
			n, err = strconv.Atoi(v)
			st.NoNewPrivs = n != 0
		default:
			continue
		}
		if err != nil {
			return ProcStatus{}, fmt.Errorf("status field %s %q: %w", k, v, err)
		}
		st.seen[k] = true
	}
	if err := sc.Err(); err != nil {
		return ProcStatus{}, fmt.Errorf("read status: %w", err)
	}
	return st, nil
}

func parseIDs(v string) ([]uint32, error) {
	var ids []uint32
	for _, f := range strings.Fields(v) {
		id, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, err
		}
		ids = append(ids, uint32(id))
	}
	return ids, nil
}
