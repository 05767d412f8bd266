package netplugin

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
)

// Manager attaches pods to the network configured in the CNI config
// directory, which it watches so a network installed after start-up is
// picked up without a restart.
type Manager struct {
	o       Options
	log     *slog.Logger
	cni     *libcni.CNIConfig
	pending pendingStore

	mu        sync.RWMutex
	cur       *netConfig // guarded by mu; nil until a valid config exists
	loadErr   error      // guarded by mu; why cur is nil
	statusErr error      // guarded by mu; last CNI STATUS failure (spec 1.1)

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// New loads the network config and starts watching o.ConfDir. A missing or
// empty config dir is not an error: Status reports it until a config
// appears.
func New(ctx context.Context, o Options) (*Manager, error) {
	o = o.withDefaults()
	if !filepath.IsAbs(o.CacheDir) || !filepath.IsAbs(o.ConfDir) {
		return nil, fmt.Errorf("cni conf dir %q and cache dir %q must be absolute: %w", o.ConfDir, o.CacheDir, errdefs.ErrInvalidArgument)
	}
	m := &Manager{
		o:       o,
		log:     o.Logger.With("component", "cni"),
		pending: pendingStore{dir: filepath.Join(o.CacheDir, "pending")},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	m.cni = libcni.NewCNIConfigWithCacheDir(o.BinDirs, o.CacheDir, &pluginExec{log: m.log})
	m.reload(ctx)
	go m.watch()
	return m, nil
}

// Close stops watching the config dir. It does not touch attachments.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() { close(m.stop) })
	<-m.done
	return nil
}

func (m *Manager) watch() {
	defer close(m.done)
	t := time.NewTicker(m.o.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.reload(context.Background())
		}
	}
}

// reload re-reads the config dir; polling instead of inotify keeps it
// simple and also notices plugin binaries appearing, which inotify on the
// config dir would not.
func (m *Manager) reload(ctx context.Context) {
	cfg, err := loadConfig(m.o.ConfDir, m.o.BinDirs)
	var statusErr error
	if cfg != nil {
		sctx, cancel := context.WithTimeout(ctx, m.o.PluginTimeout)
		if serr := m.cni.GetStatusNetworkList(sctx, cfg.list); serr != nil {
			statusErr = fmt.Errorf("cni network %q not ready: %w", cfg.list.Name, serr)
		}
		cancel()
	}

	m.mu.Lock()
	prev, prevErr := m.cur, m.loadErr
	m.cur, m.loadErr, m.statusErr = cfg, err, statusErr
	m.mu.Unlock()

	switch {
	case cfg != nil && !cfg.same(prev):
		m.log.InfoContext(ctx, "cni network config loaded", "file", cfg.file, "network", cfg.list.Name, "cni_version", cfg.list.CNIVersion)
	case err != nil && (prevErr == nil || prevErr.Error() != err.Error()):
		m.log.WarnContext(ctx, "no usable cni network config", "error", err)
	}
}

// Status returns nil when a valid network config is loaded and its plugins
// report ready; otherwise its error text is meant for NetworkReady=false
// with reason NetworkPluginNotReady.
func (m *Manager) Status() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.cur == nil {
		return m.loadErr
	}
	return m.statusErr
}

// config returns the current network or why there is none.
func (m *Manager) config() (*netConfig, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.cur == nil {
		return nil, m.loadErr
	}
	return m.cur, nil
}

// pluginCtx bounds one plugin chain call. Undo steps pass a context
// detached from the request so a cancelled request still gets cleaned up.
func (m *Manager) pluginCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.o.PluginTimeout)
}
