// Package netns creates and removes the namespace pins of a pod sandbox: a
// network, IPC and UTS namespace created together on one throwaway OS
// thread and kept alive by bind-mounting their nsfs files onto empty files,
// as `ip netns add`, containerd and CRI-O's pinns do. A pin outlives every
// process, so CNI can configure the network before any process exists and
// containers join the namespaces by path. Do runs code inside a pinned
// network namespace on a thread of its own: every switch of a thread's
// namespaces in berthd goes through this package, which keeps it off the
// main thread.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Request says which namespaces to create and where to pin them. An empty
// directory means that namespace is not created (the host's is used).
type Request struct {
	ID       string // pin file name inside each directory
	NetDir   string
	IPCDir   string
	UTSDir   string
	Hostname string // set inside the new UTS namespace; required when UTSDir != ""
}

// Pins are the bind-mounted pin files; "" for a namespace not created.
type Pins struct {
	Net, IPC, UTS string
}

type pin struct {
	path   string // pin file
	nsFile string // name under /proc/thread-self/ns
	flag   int    // CLONE_NEW* for unshare
}

// Create unshares the requested namespaces on a dedicated OS thread, brings
// lo up in the network namespace, sets the hostname in the UTS namespace and
// pins each namespace at <dir>/<ID>. It is all or nothing: on error no pin
// file or mount is left behind.
func Create(r Request) (Pins, error) {
	if r.ID == "" || r.ID != filepath.Base(r.ID) || r.ID == "." || r.ID == ".." {
		return Pins{}, fmt.Errorf("pin id %q: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	var pins Pins
	var todo []pin
	if r.NetDir != "" {
		pins.Net = filepath.Join(r.NetDir, r.ID)
		todo = append(todo, pin{pins.Net, "net", unix.CLONE_NEWNET})
	}
	if r.IPCDir != "" {
		pins.IPC = filepath.Join(r.IPCDir, r.ID)
		todo = append(todo, pin{pins.IPC, "ipc", unix.CLONE_NEWIPC})
	}
	if r.UTSDir != "" {
		pins.UTS = filepath.Join(r.UTSDir, r.ID)
		todo = append(todo, pin{pins.UTS, "uts", unix.CLONE_NEWUTS})
	}
	if len(todo) == 0 {
		return pins, nil
	}

	var created []string
	undo := func() {
		for _, p := range created {
			_ = Remove(p)
		}
	}
	for _, p := range todo {
		if err := createPinFile(p.path); err != nil {
			undo()
			return Pins{}, err
		}
		created = append(created, p.path)
	}

	err := OnDisposableThread(func() error { return pinOnThisThread(todo, r.Hostname) })
	if err != nil {
		undo()
		return Pins{}, fmt.Errorf("pin namespaces for %q: %w", r.ID, err)
	}
	return pins, nil
}

func createPinFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create pin dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("pin %q: %w", path, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("create pin file: %w", err)
	}
	return f.Close()
}

// pinOnThisThread must run on a locked thread that is discarded afterwards.
func pinOnThisThread(todo []pin, hostname string) error {
	flags := 0
	for _, p := range todo {
		flags |= p.flag
	}
	if err := unix.Unshare(flags); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	for _, p := range todo {
		switch p.flag {
		case unix.CLONE_NEWUTS:
			if err := unix.Sethostname([]byte(hostname)); err != nil {
				return fmt.Errorf("set hostname %q: %w", hostname, err)
			}
		case unix.CLONE_NEWNET:
			if err := loopbackUp(); err != nil {
				return err
			}
		}
	}
	for _, p := range todo {
		src := "/proc/thread-self/ns/" + p.nsFile
		if err := unix.Mount(src, p.path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s onto %q: %w", src, p.path, err)
		}
	}
	return nil
}

// loopbackUp sets IFF_UP on lo in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("ifreq lo: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// Remove unmounts a pin and deletes its file. A missing pin, or a file that
// is not mounted, is not an error, so Remove can be repeated.
func Remove(path string) error {
	if path == "" {
		return nil
	}
	// A pin can be stacked if something bound it twice; peel every layer.
	if err := unmountAll(path); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pin %q: %w", path, err)
	}
	return nil
}

func unmountAll(path string) error {
	for i := 0; i < 16; i++ {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("unmount pin %q: %w", path, err)
	}
	return fmt.Errorf("unmount pin %q: still mounted: %w", path, errdefs.ErrFailedPrecondition)
}

// errMainThread is the guard's refusal: the process's main thread never
// changes namespaces (see OnDisposableThread).
var errMainThread = errors.New("refusing to change the namespaces of the main thread")

// OnDisposableThread runs fn on an OS thread that is thrown away afterwards,
// so fn may change the thread's namespaces (unshare, setns) without any
// other goroutine ever running in them.
//
// The goroutine stays locked to its thread when it returns, which makes the
// runtime terminate the thread. The main thread is the exception: the
// runtime parks it forever instead, and since /proc/<pid>/ns shows the main
// thread's namespaces and a parked thread would keep a pod's namespaces
// alive after their pins are gone, fn never runs there.
func OnDisposableThread(fn func() error) error {
	return onThread(func() (bool, error) { return false, fn() })
}

// Do runs fn on a locked OS thread switched into the network namespace
// pinned at path, then switches the thread back: what fn opens there (a
// socket, /proc/thread-self/net/...) belongs to that namespace. fn must
// not rely on goroutines it starts, which run on other threads. The
// thread goes back to the Go scheduler only if it made it back to its own
// namespace; otherwise it ends with its goroutine. It is never the main
// thread (see OnDisposableThread). fn's error is returned as it is.
func Do(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open network namespace %q: %w", path, err)
	}
	defer target.Close()
	return onThread(func() (bool, error) { return enterAndRun(target, path, fn) })
}

// enterAndRun switches the calling thread, which must be locked, into the
// network namespace target, runs fn and switches back. back is false when
// the thread may still be in target's namespace. The guard: on the main
// thread it refuses before changing anything.
func enterAndRun(target *os.File, path string, fn func() error) (back bool, err error) {
	if isMainThread() {
		return true, fmt.Errorf("enter network namespace %q: %w", path, errMainThread)
	}
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return true, fmt.Errorf("open own network namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("enter network namespace %q: %w", path, err)
	}
	err = fn()
	return unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil, err
}

// onThread runs fn on a new goroutine locked to an OS thread other than
// the main one, and unlocks the thread afterwards if fn says it is clean;
// an unclean thread ends with the goroutine.
func onThread(fn func() (clean bool, err error)) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if isMainThread() {
			// While this goroutine holds the main thread locked, the
			// nested goroutine is scheduled on another thread.
			errc <- onThread(fn)
			runtime.UnlockOSThread()
			return
		}
		clean, err := fn()
		if clean {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func isMainThread() bool { return unix.Gettid() == unix.Getpid() }
