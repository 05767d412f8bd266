package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// Files in a shim's state directory that berthd reads without the shim.
const (
	// ExitFileName holds the init process's exit, written before any Wait
	// caller is answered.
	ExitFileName = "exit.json"
	// PidFileName holds the serving shim's pid.
	PidFileName = "shim.pid"
	// StartTimeFileName holds the shim's start time (clock ticks after
	// boot, /proc/PID/stat field 22), so a reused pid is not taken for it.
	StartTimeFileName = "shim.start"
)

// ExitFileVersion is the version of the exit file format written.
const ExitFileVersion = 1

// ExitFile is the on-disk exit record.
type ExitFile struct {
	ExitStatus int32 `json:"exit_status"`
	// ExitedAt is unix nanoseconds.
	ExitedAt int64 `json:"exited_at"`
	Version  int   `json:"version"`
	// Reason is set when the exit was not observed but inferred (the shim
	// died).
	Reason string `json:"reason,omitempty"`
}

// WriteExitFile writes dir/exit.json atomically: a reader sees no file or
// the complete record, even across a crash.
func WriteExitFile(dir string, e ExitFile) error {
	if e.Version == 0 {
		e.Version = ExitFileVersion
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode exit file: %w", err)
	}
	return writeAtomic(filepath.Join(dir, ExitFileName), b)
}

// ReadExitFile reads dir/exit.json; errdefs.ErrNotFound when there is none.
func ReadExitFile(dir string) (ExitFile, error) {
	path := filepath.Join(dir, ExitFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ExitFile{}, fmt.Errorf("exit file %q: %w", path, errdefs.ErrNotFound)
	}
	if err != nil {
		return ExitFile{}, fmt.Errorf("read exit file: %w", err)
	}
	var e ExitFile
	if err := json.Unmarshal(b, &e); err != nil {
		return ExitFile{}, fmt.Errorf("decode exit file %q: %w: %w", path, errdefs.ErrDataLoss, err)
	}
	if e.Version != ExitFileVersion {
		return ExitFile{}, fmt.Errorf("exit file %q version %d: %w", path, e.Version, errdefs.ErrNotImplemented)
	}
	return e, nil
}

// WriteShimPid records the serving shim's pid and start time.
func WriteShimPid(dir string, pid int) error {
	start, err := ProcessStartTime(pid)
	if err != nil {
		return err
	}
	// The start time goes first: a pid file is only trusted with it.
	if err := writeAtomic(filepath.Join(dir, StartTimeFileName), []byte(strconv.FormatUint(start, 10))); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, PidFileName), []byte(strconv.Itoa(pid)))
}

// ReadShimPid returns the recorded shim pid and start time;
// errdefs.ErrNotFound when the shim never recorded them.
func ReadShimPid(dir string) (pid int, start uint64, err error) {
	b, err := os.ReadFile(filepath.Join(dir, PidFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("shim pid file in %q: %w", dir, errdefs.ErrNotFound)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read shim pid: %w", err)
	}
	pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, 0, fmt.Errorf("shim pid file in %q: %w", dir, errdefs.ErrDataLoss)
	}
	b, err = os.ReadFile(filepath.Join(dir, StartTimeFileName))
	if err != nil {
		return 0, 0, fmt.Errorf("read shim start time: %w", err)
	}
	start, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("shim start time in %q: %w", dir, errdefs.ErrDataLoss)
	}
	return pid, start, nil
}

// writeAtomic writes path through a temp file, fsync and rename.
func writeAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %q: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %q: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename to %q: %w", path, err)
	}
	return nil
}
