package sandbox

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/sandbox/netns"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pauseBin != "" {
		os.RemoveAll(filepath.Dir(pauseBin))
	}
	os.Exit(code)
}

var (
	pauseOnce sync.Once
	pauseBin  string
	pauseErr  error
)

// buildPause builds cmd/berth-pause once per test binary.
func buildPause(t *testing.T) string {
	t.Helper()
	pauseOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-pause-bin")
		if err != nil {
			pauseErr = err
			return
		}
		pauseBin = filepath.Join(dir, "berth-pause")
		out, err := exec.Command("go", "build", "-o", pauseBin, "../cmd/berth-pause").CombinedOutput()
		if err != nil {
			pauseErr = errors.New(string(out))
		}
	})
	if pauseErr != nil {
		t.Fatalf("build berth-pause: %v", pauseErr)
	}
	return pauseBin
}

type env struct {
	root string
	c    *Controller
}

// newEnv gives a Controller whose pins and pod dirs live under a fresh temp
// root, and checks at cleanup that nothing is mounted under it.
func newEnv(t *testing.T, pausePath string) *env {
	t.Helper()
	root, err := os.MkdirTemp("/tmp", "bt")
	if err != nil {
		t.Fatal(err)
	}
	if pausePath == "" {
		pausePath = filepath.Join(root, "no-such-pause")
	}
	c, err := New(Options{NetNSDir: filepath.Join(root, "run", "netns"), PausePath: pausePath, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m := mountsUnder(t, root); len(m) > 0 {
			t.Errorf("mounts left under %s: %v", root, m)
			for i := len(m) - 1; i >= 0; i-- {
				_ = unix.Unmount(m[i], unix.MNT_DETACH)
			}
		}
		os.RemoveAll(root)
	})
	return &env{root: root, c: c}
}

func mountsUnder(t *testing.T, root string) []string {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	return out
}

func mountOf(t *testing.T, path string) *mountinfo.Info {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		return nil
	}
	return ms[len(ms)-1]
}

// filesUnder lists every non-directory under root.
func filesUnder(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

// inNamespace runs fn on a throwaway OS thread that joined the namespace
// pinned at path.
func inNamespace(path string, kind int, fn func() error) error {
	return netns.OnDisposableThread(func() error {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, kind); err != nil {
			return err
		}
		return fn()
	})
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// statusField returns a field of /proc/<pid>/status, "" if absent.
func statusField(t *testing.T, pid, field string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
