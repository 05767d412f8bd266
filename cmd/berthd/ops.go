package main

// ops.go is how an operator acts on a running berthd: SIGUSR1 dumps every
// goroutine's stack to the log dir, SIGHUP re-reads the config file and
// applies what can change without a restart, SIGTERM stops serving within a
// bound and leaves every container running. It also wires the metrics hooks
// that need no change in the components they observe.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pelletier/go-toml/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/cri/metrics"
	"github.com/berth-runtime/berth/cri/server"
	"github.com/berth-runtime/berth/imagesvc"
	"github.com/berth-runtime/berth/netplugin"
)

// shutdownGrace bounds how long in-flight requests may run after SIGTERM;
// kubelet retries whatever was cut short, and recovery finishes it.
const shutdownGrace = 10 * time.Second

// configSource is where the running config came from, so SIGHUP reads the
// same file the same way.
type configSource struct {
	path     string
	explicit bool
}

// ops handles SIGUSR1 and SIGHUP.
type ops struct {
	src     configSource
	level   *slog.LevelVar
	log     *slog.Logger
	network *swappableNetwork
	sigs    chan os.Signal

	mu  sync.Mutex    // guards cfg
	cfg config.Config // the config as applied: keys SIGHUP could not apply keep their old value
}

// newOps starts catching SIGUSR1 and SIGHUP at once, so a signal sent while
// berthd starts up is handled once it serves instead of killing it (SIGHUP's
// default action); call run to handle them.
func newOps(src configSource, cfg config.Config, level *slog.LevelVar, log *slog.Logger) *ops {
	o := &ops{src: src, cfg: cfg, level: level, log: log, sigs: make(chan os.Signal, 4)}
	signal.Notify(o.sigs, unix.SIGUSR1, unix.SIGHUP)
	return o
}

// run handles signals until ctx ends.
func (o *ops) run(ctx context.Context) {
	defer signal.Stop(o.sigs)
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-o.sigs:
			switch sig {
			case unix.SIGUSR1:
				if path, err := o.dumpGoroutines(); err != nil {
					o.log.Error("goroutine dump failed", "error", err)
				} else {
					o.log.Info("goroutine stacks dumped", "path", path)
				}
			case unix.SIGHUP:
				o.reload(ctx)
			}
		}
	}
}

// dumpGoroutines writes every goroutine's stack, in panic format, to a new
// file in the log dir and returns its path.
func (o *ops) dumpGoroutines() (string, error) {
	o.mu.Lock()
	dir := o.cfg.LogDir()
	o.mu.Unlock()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create log dir: %w", err)
	}
	name := fmt.Sprintf("berthd-goroutines-%s-%d.log", time.Now().UTC().Format("20060102T150405.000000000Z"), os.Getpid())
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create goroutine dump: %w", err)
	}
	werr := pprof.Lookup("goroutine").WriteTo(f, 2)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("write goroutine dump: %w", werr)
	}
	return path, nil
}

// reload re-reads the config and applies the keys that can change at run
// time; it logs what it applied and what needs a restart. A bad file
// changes nothing.
func (o *ops) reload(ctx context.Context) (applied, skipped []string) {
	next, err := config.Load(o.src.path, o.src.explicit)
	if err != nil {
		o.log.Error("config reload failed; the running config stays", "path", o.src.path, "error", err)
		return nil, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	changed, err := changedKeys(o.cfg, next)
	if err != nil {
		o.log.Error("config reload failed", "error", err)
		return nil, nil
	}
	cur := o.cfg
	for _, key := range changed {
		if !config.Reloadable(key) {
			skipped = append(skipped, key)
			continue
		}
		applied = append(applied, key)
	}
	if slices.Contains(applied, "log.level") {
		var lvl slog.Level
		_ = lvl.UnmarshalText([]byte(next.Log.Level)) // Validate vetted it
		o.level.Set(lvl)
		cur.Log.Level = next.Log.Level
	}
	if slices.Contains(applied, "cni.conf_dir") || slices.Contains(applied, "cni.bin_dirs") {
		if err := o.network.swap(ctx, netOptions(next, o.log)); err != nil {
			o.log.Error("cni config not reloaded; the running network config stays", "error", err)
			applied = slices.DeleteFunc(applied, func(k string) bool { return strings.HasPrefix(k, "cni.") })
			skipped = append(skipped, "cni.conf_dir", "cni.bin_dirs")
		} else {
			cur.CNI = next.CNI
		}
	}
	o.cfg = cur
	o.log.Info("config reloaded", "path", o.src.path, "applied", applied, "not_applied_restart_needed", skipped)
	return applied, skipped
}

// changedKeys lists the dotted TOML keys whose values differ between a and
// b; tables that only one side has (a runtime handler) count as their key.
func changedKeys(a, b config.Config) ([]string, error) {
	fa, err := flatten(a)
	if err != nil {
		return nil, err
	}
	fb, err := flatten(b)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k, va := range fa {
		if vb, ok := fb[k]; !ok || !reflect.DeepEqual(va, vb) {
			keys = append(keys, k)
		}
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

func flatten(c config.Config) (map[string]any, error) {
	data, err := config.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("render config: %w", err)
	}
	var m map[string]any
	if err := toml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("reparse config: %w", err)
	}
	out := map[string]any{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
				walk(prefix+k+".", sub)
				continue
			}
			out[prefix+k] = v
		}
	}
	walk("", m)
	return out, nil
}

func netOptions(cfg config.Config, log *slog.Logger) netplugin.Options {
	return netplugin.Options{
		ConfDir: cfg.CNI.ConfDir, BinDirs: cfg.CNI.BinDirs,
		CacheDir: filepath.Join(cfg.State, "cni-cache"), Logger: log,
		PluginTimeout: cfg.CNI.Timeout(),
	}
}

// swappableNetwork lets SIGHUP replace the CNI manager when the conf or bin
// dirs change. Attachments made by the old manager are torn down by the new
// one through libcni's result cache, which both share.
type swappableNetwork struct {
	mu  sync.RWMutex       // guards cur; held shared across each call
	cur *netplugin.Manager // never nil
}

var _ server.Network = (*swappableNetwork)(nil)

func newSwappableNetwork(ctx context.Context, o netplugin.Options) (*swappableNetwork, error) {
	m, err := netplugin.New(ctx, o)
	if err != nil {
		return nil, err
	}
	return &swappableNetwork{cur: m}, nil
}

func (n *swappableNetwork) swap(ctx context.Context, o netplugin.Options) error {
	m, err := netplugin.New(ctx, o)
	if err != nil {
		return err
	}
	n.mu.Lock()
	old := n.cur
	n.cur = m
	n.mu.Unlock()
	return old.Close()
}

func (n *swappableNetwork) Status() error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.cur.Status()
}

func (n *swappableNetwork) Setup(ctx context.Context, p netplugin.PodNetwork) (netplugin.Result, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.cur.Setup(ctx, p)
}

func (n *swappableNetwork) Teardown(ctx context.Context, p netplugin.PodNetwork) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.cur.Teardown(ctx, p)
}

func (n *swappableNetwork) Check(ctx context.Context, p netplugin.PodNetwork) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.cur.Check(ctx, p)
}

func (n *swappableNetwork) GC(ctx context.Context, keepIDs []string) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.cur.GC(ctx, keepIDs)
}

func (n *swappableNetwork) Close() error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.cur.Close()
}

// meteredImages reports each pull to the metrics. imagesvc can later report
// the bytes it really downloaded through metrics.PullObserver; until then
// a pull accounts for the image's compressed size.
type meteredImages struct {
	*imagesvc.Service
	obs metrics.PullObserver
}

func (i meteredImages) Pull(ctx context.Context, ref string, auth *imagesvc.Auth) (imagesvc.Image, error) {
	start := time.Now()
	img, err := i.Service.Pull(ctx, ref, auth)
	i.obs.ObservePull(int64(img.Size), time.Since(start), err)
	return img, err
}

// shimCounter counts the shim sockets in dir: a shim serves one while it
// lives and berthd removes it when it cleans up after the shim.
func shimCounter(dir string) func() int {
	return func() int {
		matches, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
		return len(matches)
	}
}

// gracefulStop stops accepting requests and lets those in flight finish
// for up to grace, then cuts them off. Containers and their shims are
// never touched: they outlive berthd by design.
func gracefulStop(g *grpc.Server, grace time.Duration, log *slog.Logger) {
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		log.Warn("requests still running after the shutdown grace period; cutting them off", "grace", grace)
		g.Stop()
		<-done
	}
}
