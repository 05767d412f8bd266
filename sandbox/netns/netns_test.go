package netns

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func nsIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// threadNetNS lists the network namespace inode of every thread of this
// process.
func threadNetNS(t *testing.T) map[int]uint64 {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]uint64{}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		var st unix.Stat_t
		if unix.Stat("/proc/self/task/"+e.Name()+"/ns/net", &st) == nil {
			out[tid] = st.Ino
		}
	}
	return out
}

// No thread of the process may stay in a namespace fn entered: not the
// main thread (which the runtime would park) and not a pooled thread.
func TestOnDisposableThreadLeavesNoThreadBehind(t *testing.T) {
	requireRoot(t)
	host := nsIno(t, "/proc/self/ns/net")
	for i := 0; i < 50; i++ {
		var tid int
		err := OnDisposableThread(func() error {
			tid = unix.Gettid()
			return unix.Unshare(unix.CLONE_NEWNET)
		})
		if err != nil {
			t.Fatal(err)
		}
		if tid == unix.Getpid() {
			t.Fatalf("fn ran on the main thread")
		}
	}
	// The runtime destroys a thread whose locked goroutine exited after
	// OnDisposableThread has returned, so give the last ones a moment; a
	// thread that stays in a foreign netns is the bug.
	assertNoThreadOutside(t, host)
}

// assertNoThreadOutside fails for every thread of the process that is not
// in the network namespace host within a few seconds.
func assertNoThreadOutside(t *testing.T, host uint64) {
	t.Helper()
	var stray map[int]uint64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		stray = map[int]uint64{}
		for tid, ino := range threadNetNS(t) {
			if ino != host {
				stray[tid] = ino
			}
		}
		if len(stray) == 0 {
			return
		}
	}
	for tid, ino := range stray {
		t.Errorf("thread %d left in netns %d (host %d)", tid, ino, host)
	}
}

func TestCreateRemove(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	r := Request{ID: "p", NetDir: filepath.Join(root, "net"), UTSDir: filepath.Join(root, "uts"), Hostname: "h1"}
	pins, err := Create(r)
	if err != nil {
		t.Fatal(err)
	}
	if pins.IPC != "" || pins.Net != filepath.Join(root, "net", "p") || pins.UTS != filepath.Join(root, "uts", "p") {
		t.Fatalf("pins = %+v", pins)
	}
	for _, p := range []string{pins.Net, pins.UTS} {
		ok, err := mountinfo.Mounted(p)
		if err != nil || !ok {
			t.Errorf("%s mounted = %v, %v", p, ok, err)
		}
	}
	if _, err := Create(r); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second create: %v, want already exists", err)
	}
	for i := 0; i < 2; i++ {
		for _, p := range []string{pins.Net, pins.UTS} {
			if err := Remove(p); err != nil {
				t.Fatalf("remove #%d %s: %v", i, p, err)
			}
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pin %s still exists: %v", p, err)
			}
		}
	}
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
	if err != nil || len(ms) != 0 {
		t.Errorf("mounts left: %v %v", ms, err)
	}
}

func TestCreateFailureUndoes(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	// A hostname over HOST_NAME_MAX makes sethostname fail after unshare.
	r := Request{ID: "p", NetDir: filepath.Join(root, "net"), UTSDir: filepath.Join(root, "uts"),
		Hostname: string(make([]byte, 100))}
	if _, err := Create(r); err == nil {
		t.Fatal("create succeeded")
	}
	for _, p := range []string{filepath.Join(root, "net", "p"), filepath.Join(root, "uts", "p")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin %s left: %v", p, err)
		}
	}
	if _, err := Create(Request{ID: "../x", NetDir: root}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad id: %v", err)
	}
}
