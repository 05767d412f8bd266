package netns

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// The main goroutine is locked to the main thread while package init runs;
// locking it again here keeps it there, so TestMain runs on the main thread
// and can try the guard where it matters.
func init() { runtime.LockOSThread() }

// onMain is what TestMain saw on the main thread.
var onMain struct {
	ok        bool  // TestMain did run on the main thread
	guardErr  error // enterAndRun there
	guardRan  bool  // fn ran anyway
	doErr     error // Do there, into the own namespace
	doOnMain  bool  // Do's fn ran on the main thread
	disposeOn bool  // OnDisposableThread's fn ran on the main thread
}

func TestMain(m *testing.M) {
	if isMainThread() {
		onMain.ok = true
		self, err := os.Open("/proc/self/ns/net")
		if err == nil {
			_, onMain.guardErr = enterAndRun(self, "self", func() error { onMain.guardRan = true; return nil })
			self.Close()
		}
		if os.Geteuid() == 0 {
			onMain.doErr = Do("/proc/self/ns/net", func() error { onMain.doOnMain = isMainThread(); return nil })
		}
		_ = OnDisposableThread(func() error { onMain.disposeOn = isMainThread(); return nil })
	}
	os.Exit(m.Run())
}

func TestGuardRefusesMainThread(t *testing.T) {
	if !onMain.ok {
		t.Skip("TestMain did not run on the main thread")
	}
	if !errors.Is(onMain.guardErr, errMainThread) || onMain.guardRan {
		t.Errorf("enterAndRun on the main thread: err %v, fn ran %v; want the guard's refusal", onMain.guardErr, onMain.guardRan)
	}
	if onMain.disposeOn {
		t.Error("OnDisposableThread called from the main thread ran fn there")
	}
	if os.Geteuid() != 0 {
		t.Skip("Do needs root")
	}
	if onMain.doErr != nil || onMain.doOnMain {
		t.Errorf("Do called from the main thread: err %v, ran on the main thread %v", onMain.doErr, onMain.doOnMain)
	}
}

// Do runs fn in the pinned namespace, on a thread that is not the main
// one, and leaves the caller's thread where it was.
func TestDoEntersNetNS(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	pins, err := Create(Request{ID: "p", NetDir: filepath.Join(root, "net")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Remove(pins.Net); err != nil {
			t.Error(err)
		}
	})
	want := nsIno(t, pins.Net)
	host := nsIno(t, "/proc/self/ns/net")
	if want == host {
		t.Fatal("the pin is the host's namespace")
	}
	for i := 0; i < 20; i++ {
		var got uint64
		var tid int
		err := Do(pins.Net, func() error {
			tid = unix.Gettid()
			var st unix.Stat_t
			if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
				return err
			}
			got = st.Ino
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got != want || tid == unix.Getpid() {
			t.Fatalf("fn ran in netns %d on thread %d; want netns %d off the main thread %d", got, tid, want, unix.Getpid())
		}
	}
	// Threads handed back to the scheduler are in the host namespace
	// again (Create's own disposable thread may take a moment to end).
	assertNoThreadOutside(t, host)
	fnErr := errors.New("from fn")
	if err := Do(pins.Net, func() error { return fnErr }); !errors.Is(err, fnErr) || err.Error() != fnErr.Error() {
		t.Errorf("Do = %v, want fn's error as it is", err)
	}
	if err := Do(filepath.Join(root, "missing"), func() error { t.Error("fn ran"); return nil }); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Do of a missing pin = %v", err)
	}
}
