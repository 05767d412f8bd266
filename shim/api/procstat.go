package api

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

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
