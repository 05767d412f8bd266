package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OOMWatcher remembers the OOM kill count of watched cgroup v2 cgroups as
// the kernel changes it. Under the systemd driver a container's cgroup is
// a transient scope that systemd removes as soon as its last process is
// gone, so memory.events is often already gone when berthd learns the
// container exited; the watcher read it when the kernel counted the kill
// (memory.events is notified on every change, as containerd's shim and
// conmon watch it). On v1, and for a cgroup never added, it knows nothing
// and OOMKills reads the counter at exit, as the cgroupfs driver's
// cgroups live until the runtime deletes them.
type OOMWatcher struct {
	m    *Manager
	file *os.File // the inotify instance; nil on v1

	mu     sync.Mutex          // guards byWD and byPath
	byWD   map[int32]*oomWatch // watch descriptor => watch
	byPath map[string]*oomWatch
}

type oomWatch struct {
	path  string
	wd    int32
	kills uint64 // last oom_kill count read
	seen  bool   // kills was read at least once
}

// NewOOMWatcher returns a watcher for m's hierarchy; on v2 it starts one
// goroutine that reads inotify events until Close.
func (m *Manager) NewOOMWatcher() (*OOMWatcher, error) {
	w := &OOMWatcher{m: m, byWD: map[int32]*oomWatch{}, byPath: map[string]*oomWatch{}}
	if !m.unified {
		return w, nil
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify for OOM events: %w", err)
	}
	w.file = os.NewFile(uintptr(fd), "inotify")
	go w.loop()
	return w, nil
}

// Add starts watching the cgroup at path (below the hierarchy root) and
// reads its count once. A cgroup that does not exist (yet) is not an
// error: the counter is then read at exit only.
func (w *OOMWatcher) Add(path string) error {
	if w.file == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.byPath[path]; ok {
		return nil
	}
	file := filepath.Join(w.m.dir("memory", path), "memory.events")
	wd, err := unix.InotifyAddWatch(int(w.file.Fd()), file, unix.IN_MODIFY)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("watch %s: %w", file, err)
	}
	ow := &oomWatch{path: path, wd: int32(wd)}
	w.byWD[ow.wd] = ow
	w.byPath[path] = ow
	w.refresh(ow)
	return nil
}

// Kills returns the last OOM kill count read for path, false when none
// was read (not watched, or never readable).
func (w *OOMWatcher) Kills(path string) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ow, ok := w.byPath[path]
	if !ok || !ow.seen {
		return 0, false
	}
	return ow.kills, true
}

// Remove forgets path; its watch is dropped (the kernel drops it by
// itself when the cgroup is removed).
func (w *OOMWatcher) Remove(path string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ow, ok := w.byPath[path]
	if !ok {
		return
	}
	delete(w.byPath, path)
	delete(w.byWD, ow.wd)
	if w.file != nil {
		_, _ = unix.InotifyRmWatch(int(w.file.Fd()), uint32(ow.wd))
	}
}

// Close stops the watcher.
func (w *OOMWatcher) Close() error {
	if w.file == nil {
		return nil
	}
	return w.file.Close()
}

// refresh reads ow's counter; a cgroup already gone keeps the last value.
// Called with mu held.
func (w *OOMWatcher) refresh(ow *oomWatch) {
	n, err := w.m.OOMKills(ow.path)
	if err != nil {
		return
	}
	if !ow.seen || n > ow.kills {
		ow.kills, ow.seen = n, true
	}
}

func (w *OOMWatcher) loop() {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.PathMax+1))
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			return // closed
		}
		w.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off])) //nolint:gosec // the kernel's event layout
			if ow, ok := w.byWD[ev.Wd]; ok {
				if ev.Mask&unix.IN_IGNORED != 0 {
					delete(w.byWD, ev.Wd) // cgroup removed; byPath keeps the last count
				} else {
					w.refresh(ow)
				}
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		w.mu.Unlock()
	}
}
