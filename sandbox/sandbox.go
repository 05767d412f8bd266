package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/sandbox/netns"
	"github.com/berth-runtime/berth/sandbox/podfiles"
	"github.com/berth-runtime/berth/sandbox/rollback"
)

// DefaultNetNSDir is where network namespaces are pinned unless configured.
const DefaultNetNSDir = "/run/berth/netns"

// maxHostnameLen is the kernel's limit for sethostname (HOST_NAME_MAX).
const maxHostnameLen = 64

// DNS is the resolver configuration written to the pod's resolv.conf.
type DNS struct {
	Servers, Searches, Options []string
}

// Spec describes the sandbox to create.
type Spec struct {
	ID       string
	Dir      string // per-pod dir, created by Create, removed by Remove
	Hostname string // "" => host's hostname
	DNS      *DNS   // nil => copy of the host's /etc/resolv.conf
	// HostNetwork implies the host UTS namespace, as kubelet does.
	HostNetwork, HostIPC, SharePID bool
	ShmSize                        int64 // bytes; 0 => 64 MiB
	// UIDMappings and GIDMappings, when set, put the infra process of a
	// SharePID pod in a new user namespace that owns its PID namespace, so
	// the pod's containers can join both and mount their /proc.
	UIDMappings, GIDMappings []syscall.SysProcIDMap
}

// Pod is what Create built. It is JSON-serialisable; the caller persists it
// and hands it back to Stop/Remove, also after a daemon restart.
type Pod struct {
	ID, Dir             string
	NetNS, IPCNS, UTSNS string // pin paths, "" when the host's is used
	HostnamePath        string
	HostsPath           string
	ResolvPath          string
	ShmPath             string // "" with HostIPC: containers use the host's /dev/shm
	InfraPID            int    // 0 when no infra process
	InfraStartTime      uint64 // field 22 of /proc/<pid>/stat, in clock ticks since boot
	// NoInfra says the pod never has an infra process (it does not share
	// a PID namespace), so Remove need not search /proc for one a crash
	// left unrecorded. Records from before the field have it false and
	// are searched.
	NoInfra bool
}

// Options configure a Controller.
type Options struct {
	NetNSDir  string // default DefaultNetNSDir
	PausePath string // berth-pause binary; default: next to the running executable
	Logger    *slog.Logger
}

// Controller creates, stops and removes pod sandboxes. It is safe for
// concurrent use.
type Controller struct {
	netNSDir, ipcNSDir, utsNSDir string
	pausePath                    string
	log                          *slog.Logger

	mu sync.Mutex
	// reaped holds, per infra pid this process started and has not yet
	// reaped, a channel closed once the reaper goroutine waited for it.
	reaped map[int]chan struct{} // guarded by mu
}

// New returns a Controller. Directories are created lazily by Create.
func New(o Options) (*Controller, error) {
	if o.NetNSDir == "" {
		o.NetNSDir = DefaultNetNSDir
	}
	if !filepath.IsAbs(o.NetNSDir) {
		return nil, fmt.Errorf("netns dir %q must be absolute: %w", o.NetNSDir, errdefs.ErrInvalidArgument)
	}
	o.NetNSDir = filepath.Clean(o.NetNSDir)
	if o.PausePath == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locate berth-pause: %w", err)
		}
		o.PausePath = filepath.Join(filepath.Dir(exe), "berth-pause")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	parent := filepath.Dir(o.NetNSDir)
	return &Controller{
		netNSDir:  o.NetNSDir,
		ipcNSDir:  filepath.Join(parent, "ipcns"),
		utsNSDir:  filepath.Join(parent, "utsns"),
		pausePath: o.PausePath,
		log:       o.Logger,
		reaped:    make(map[int]chan struct{}),
	}, nil
}

func validate(s Spec) error {
	if s.ID == "" || s.ID == "." || s.ID == ".." || strings.ContainsAny(s.ID, "/\x00") || len(s.ID) > 128 {
		return fmt.Errorf("sandbox id %q: %w", s.ID, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(s.Dir) || filepath.Clean(s.Dir) == "/" {
		return fmt.Errorf("sandbox %q dir %q must be absolute: %w", s.ID, s.Dir, errdefs.ErrInvalidArgument)
	}
	if len(s.Hostname) > maxHostnameLen || strings.ContainsAny(s.Hostname, "\n\r\x00 /") {
		return fmt.Errorf("sandbox %q hostname %q: %w", s.ID, s.Hostname, errdefs.ErrInvalidArgument)
	}
	if s.ShmSize < 0 {
		return fmt.Errorf("sandbox %q shm size %d: %w", s.ID, s.ShmSize, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Create builds the sandbox. It is all or nothing: on any failure it undoes
// everything it created (infra process, shm mount, pins, files, Dir).
func (c *Controller) Create(ctx context.Context, s Spec) (_ Pod, err error) {
	ctx, span := startSpan(ctx, "sandbox.create", s.ID)
	defer func() { endSpan(span, err) }()
	if err := validate(s); err != nil {
		return Pod{}, err
	}
	log := c.log.With("sandbox_id", s.ID)
	hostname := s.Hostname
	if hostname == "" || s.HostNetwork {
		h, err := os.Hostname()
		if err != nil {
			return Pod{}, fmt.Errorf("read host name for sandbox %q: %w", s.ID, err)
		}
		hostname = h
	}
	pod := Pod{ID: s.ID, Dir: filepath.Clean(s.Dir), NoInfra: !s.SharePID}
	cl := rollback.New(log)

	// 0700: the pod's files are its containers' (bind mounts, which need
	// no traversal by the container's user), no other user's.
	if err := os.MkdirAll(filepath.Dir(pod.Dir), 0o700); err != nil {
		return Pod{}, fmt.Errorf("create parent of sandbox %q dir: %w", s.ID, err)
	}
	if err := os.Mkdir(pod.Dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return Pod{}, fmt.Errorf("sandbox %q dir %q: %w", s.ID, pod.Dir, errdefs.ErrAlreadyExists)
		}
		return Pod{}, fmt.Errorf("create sandbox %q dir: %w", s.ID, err)
	}
	cl.Add("remove pod dir", func(context.Context) error { return os.RemoveAll(pod.Dir) })

	if err := c.build(ctx, s, hostname, &pod, cl); err != nil {
		if cerr := cl.Run(ctx); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return Pod{}, err
	}
	log.Info("sandbox created", "netns", pod.NetNS, "infra_pid", pod.InfraPID)
	return pod, nil
}

// build does the steps of Create after the pod dir exists, registering an
// undo step in cl for each thing it creates.
func (c *Controller) build(ctx context.Context, s Spec, hostname string, pod *Pod, cl *rollback.Steps) error {
	req := netns.Request{ID: s.ID, Hostname: hostname}
	if !s.HostNetwork {
		req.NetDir, req.UTSDir = c.netNSDir, c.utsNSDir
	}
	if !s.HostIPC {
		req.IPCDir = c.ipcNSDir
	}
	pins, err := netns.Create(req)
	if err != nil {
		return fmt.Errorf("create namespaces for sandbox %q: %w", s.ID, err)
	}
	pod.NetNS, pod.IPCNS, pod.UTSNS = pins.Net, pins.IPC, pins.UTS
	cl.Add("remove namespace pins", func(context.Context) error { return removePins(*pod) })

	if err := c.writeFiles(s, hostname, pod); err != nil {
		return fmt.Errorf("write files of sandbox %q: %w", s.ID, err)
	}

	if !s.HostIPC {
		size := s.ShmSize
		if size == 0 {
			size = podfiles.DefaultShmSize
		}
		shm := filepath.Join(pod.Dir, "shm")
		if err := podfiles.MountShm(shm, size); err != nil {
			return fmt.Errorf("sandbox %q: %w", s.ID, err)
		}
		pod.ShmPath = shm
		cl.Add("unmount shm", func(context.Context) error { return podfiles.UnmountShm(shm) })
	}

	if s.SharePID {
		pid, start, err := c.startInfra(*pod, s.UIDMappings, s.GIDMappings)
		if err != nil {
			return fmt.Errorf("start infra process of sandbox %q: %w", s.ID, err)
		}
		pod.InfraPID, pod.InfraStartTime = pid, start
		p := *pod
		cl.Add("stop infra process", func(ctx context.Context) error { return c.Stop(ctx, p) })
	}
	return ctx.Err()
}

func (c *Controller) writeFiles(s Spec, hostname string, pod *Pod) error {
	pod.HostnamePath = filepath.Join(pod.Dir, "hostname")
	if err := podfiles.WriteHostname(pod.HostnamePath, hostname); err != nil {
		return err
	}
	pod.HostsPath = filepath.Join(pod.Dir, "hosts")
	var err error
	if s.HostNetwork {
		// The pod sees the host's interfaces, so it gets the host's names.
		err = podfiles.CopyHostFile(pod.HostsPath, podfiles.HostHosts)
	} else {
		err = podfiles.WriteHosts(pod.HostsPath)
	}
	if err != nil {
		return err
	}
	pod.ResolvPath = filepath.Join(pod.Dir, "resolv.conf")
	if s.DNS == nil {
		return podfiles.CopyHostFile(pod.ResolvPath, podfiles.HostResolvConf)
	}
	return podfiles.WriteResolvConf(pod.ResolvPath, s.DNS.Servers, s.DNS.Searches, s.DNS.Options)
}

func removePins(p Pod) error {
	var errs []error
	for _, path := range []string{p.NetNS, p.IPCNS, p.UTSNS} {
		if err := netns.Remove(path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Remove stops the infra process, unmounts shm, removes the namespace pins
// and deletes Dir. CRI requires RemovePodSandbox of something already gone
// to succeed, so every missing part is fine and Remove can be repeated.
func (c *Controller) Remove(ctx context.Context, p Pod) (err error) {
	ctx, span := startSpan(ctx, "sandbox.remove", p.ID)
	defer func() { endSpan(span, err) }()
	if err := c.Stop(ctx, p); err != nil {
		return err
	}
	p = c.withLeftovers(p)
	var errs []error
	if err := c.killUnrecordedInfra(p); err != nil {
		errs = append(errs, err)
	}
	shmErr := podfiles.UnmountShm(p.ShmPath)
	if shmErr != nil {
		errs = append(errs, shmErr)
	}
	if err := removePins(p); err != nil {
		errs = append(errs, err)
	}
	// Never RemoveAll through a tmpfs still mounted in Dir: it would empty
	// memory a container may still use and then fail anyway.
	if shmErr == nil && filepath.IsAbs(p.Dir) && filepath.Clean(p.Dir) != "/" {
		if err := os.RemoveAll(p.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove dir: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", p.ID, err)
	}
	c.log.Info("sandbox removed", "sandbox_id", p.ID)
	return nil
}
