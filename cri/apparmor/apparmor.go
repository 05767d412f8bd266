// Package apparmor is the node's AppArmor as berthd uses it: whether the
// kernel enforces it, which profiles are loaded, and berth's RuntimeDefault
// profile, berth-default, generated from the template Docker, containerd
// and CRI-O share (github.com/moby/profiles/apparmor) and loaded with
// apparmor_parser.
package apparmor

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	mobyapparmor "github.com/moby/profiles/apparmor"
)

// DefaultProfileName is the profile RuntimeDefault applies.
const DefaultProfileName = "berth-default"

const (
	securityFSDir = "/sys/kernel/security/apparmor"
	enabledParam  = "/sys/module/apparmor/parameters/enabled"
)

// Host is the AppArmor of the node berthd runs on.
type Host struct {
	enabled  bool
	profiles string // securityfs list of loaded profiles, "name (mode)" a line
	// install generates and loads a default profile of the given name.
	install func(name string) error
	log     *slog.Logger

	mu sync.Mutex // serialises loads of the default profile
}

// New probes the host. AppArmor counts as enabled when the module says so
// and its securityfs is mounted: runc makes the same check before it
// applies a profile, and refuses one otherwise.
func New(log *slog.Logger) *Host {
	return newHost(enabledParam, securityFSDir, mobyapparmor.InstallDefault, log)
}

func newHost(param, fsDir string, install func(string) error, log *slog.Logger) *Host {
	h := &Host{profiles: filepath.Join(fsDir, "profiles"), install: install, log: log}
	if st, err := os.Stat(fsDir); err == nil && st.IsDir() {
		b, err := os.ReadFile(param)
		h.enabled = err == nil && strings.HasPrefix(string(b), "Y")
	}
	return h
}

// Enabled reports whether the kernel enforces AppArmor.
func (h *Host) Enabled() bool { return h.enabled }

// LoadDefault loads berth-default with `apparmor_parser -Kr`, which
// replaces a loaded profile of that name: safe on every start, and a
// berthd upgrade brings its template into force.
func (h *Host) LoadDefault() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.loadLocked()
}

func (h *Host) loadLocked() error {
	if !h.enabled {
		return fmt.Errorf("load apparmor profile %q: AppArmor is not enabled on this host: %w", DefaultProfileName, errdefs.ErrFailedPrecondition)
	}
	if err := h.install(DefaultProfileName); err != nil {
		h.log.Error("cannot load the AppArmor RuntimeDefault profile: containers asking for it are refused",
			"profile", DefaultProfileName, "error", err)
		return fmt.Errorf("load apparmor profile %q: %v: %w", DefaultProfileName, err, errdefs.ErrFailedPrecondition)
	}
	h.log.Info("AppArmor profile loaded", "profile", DefaultProfileName)
	return nil
}

// DefaultProfile returns berth-default's name, loading it again when the
// kernel does not have it (the start-up load failed, or someone removed
// it with apparmor_parser -R).
func (h *Host) DefaultProfile() (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ok, err := h.Loaded(DefaultProfileName)
	if err != nil {
		return "", err
	}
	if !ok {
		if err := h.loadLocked(); err != nil {
			return "", err
		}
	}
	return DefaultProfileName, nil
}

// Loaded reports whether the kernel has a profile named name, in any mode.
func (h *Host) Loaded(name string) (bool, error) {
	f, err := os.Open(h.profiles)
	if err != nil {
		return false, fmt.Errorf("read loaded apparmor profiles: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		// The mode in parentheses follows the last space; quoted profile
		// names may hold spaces themselves.
		if i := strings.LastIndex(line, " ("); i >= 0 && line[:i] == name {
			return true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("read loaded apparmor profiles: %w", err)
	}
	return false, nil
}
