// Package ocihooks reads OCI hook files from hooks.d directories, in the
// format CRI-O and podman read (containers-common's oci-hooks(5), version
// 1.0.0), and adds the hooks that match a container to its OCI spec.
package ocihooks

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Version is the only hook file format read.
const Version = "1.0.0"

// File is one hook file.
type File struct {
	Version string     `json:"version"`
	Hook    specs.Hook `json:"hook"`
	When    When       `json:"when"`
	Stages  []string   `json:"stages"`
}

// When says which containers a hook applies to: any condition that holds
// is enough.
type When struct {
	Always        *bool             `json:"always,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"` // key regexp -> value regexp
	Commands      []string          `json:"commands,omitempty"`    // regexps on the container's process path
	HasBindMounts *bool             `json:"hasBindMounts,omitempty"`
}

// hook is a validated File with its regexps compiled.
type hook struct {
	name        string
	hook        specs.Hook
	stages      []string
	always      bool
	bindMounts  bool
	annotations [][2]*regexp.Regexp
	commands    []*regexp.Regexp
}

var stages = map[string]bool{
	"prestart": true, "createRuntime": true, "createContainer": true,
	"startContainer": true, "poststart": true, "poststop": true,
}

// parse validates data, the hook file name, as CRI-O does: a known
// version, an absolute existing hook path, known stages, at least one
// condition, regexps that compile.
func parse(name string, data []byte) (hook, error) {
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return hook{}, fmt.Errorf("hook %s: %w: %w", name, err, errdefs.ErrInvalidArgument)
	}
	bad := func(why string) (hook, error) {
		return hook{}, fmt.Errorf("hook %s: %s: %w", name, why, errdefs.ErrInvalidArgument)
	}
	if f.Version != Version {
		return bad(fmt.Sprintf("version %q is not %s", f.Version, Version))
	}
	if !filepath.IsAbs(f.Hook.Path) {
		return bad(fmt.Sprintf("hook.path %q is not absolute", f.Hook.Path))
	}
	if _, err := os.Stat(f.Hook.Path); err != nil {
		return bad(fmt.Sprintf("hook.path: %v", err))
	}
	if len(f.Stages) == 0 {
		return bad("no stages")
	}
	for _, s := range f.Stages {
		if !stages[s] {
			return bad(fmt.Sprintf("unknown stage %q", s))
		}
	}
	h := hook{name: name, hook: f.Hook, stages: f.Stages}
	h.always = f.When.Always != nil && *f.When.Always
	h.bindMounts = f.When.HasBindMounts != nil && *f.When.HasBindMounts
	for k, v := range f.When.Annotations {
		kr, err := regexp.Compile(k)
		if err != nil {
			return bad(fmt.Sprintf("when.annotations key: %v", err))
		}
		vr, err := regexp.Compile(v)
		if err != nil {
			return bad(fmt.Sprintf("when.annotations value: %v", err))
		}
		h.annotations = append(h.annotations, [2]*regexp.Regexp{kr, vr})
	}
	for _, c := range f.When.Commands {
		r, err := regexp.Compile(c)
		if err != nil {
			return bad(fmt.Sprintf("when.commands: %v", err))
		}
		h.commands = append(h.commands, r)
	}
	if !h.always && !h.bindMounts && len(h.annotations) == 0 && len(h.commands) == 0 && f.When.Always == nil && f.When.HasBindMounts == nil {
		return bad("no when conditions")
	}
	return h, nil
}

// Load reads the *.json hook files of dirs, a later directory's file
// replacing an earlier one's of the same name (so /etc overrides /usr),
// in file-name order. A missing directory is skipped; a bad file is
// left out and reported in the error, which names it, alongside the
// hooks that are good: one broken file must not stop every container.
func Load(dirs []string) ([]hook, error) {
	byName := map[string]hook{}
	var errs []error
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read hooks dir %s: %w", dir, err))
			continue
		}
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
				continue
			}
			path := filepath.Join(dir, e.Name())
			data, err := os.ReadFile(path)
			if err != nil {
				errs = append(errs, fmt.Errorf("read hook %s: %w", path, err))
				continue
			}
			h, err := parse(path, data)
			if err != nil {
				errs = append(errs, err)
				delete(byName, e.Name())
				continue
			}
			byName[e.Name()] = h
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]hook, 0, len(names))
	for _, n := range names {
		out = append(out, byName[n])
	}
	return out, errors.Join(errs...)
}

func (h hook) matches(spec *specs.Spec) bool {
	if h.always {
		return true
	}
	if h.bindMounts && hasBindMounts(spec) {
		return true
	}
	for _, kv := range h.annotations {
		for k, v := range spec.Annotations {
			if kv[0].MatchString(k) && kv[1].MatchString(v) {
				return true
			}
		}
	}
	if spec.Process != nil && len(spec.Process.Args) > 0 {
		for _, c := range h.commands {
			if c.MatchString(spec.Process.Args[0]) {
				return true
			}
		}
	}
	return false
}

func hasBindMounts(spec *specs.Spec) bool {
	for _, m := range spec.Mounts {
		if m.Type == "bind" {
			return true
		}
		for _, o := range m.Options {
			if o == "bind" || o == "rbind" {
				return true
			}
		}
	}
	return false
}

// Apply loads the hooks of dirs and adds those matching spec (its
// annotations, process and mounts as they are now) to their stages. It
// returns the names of the hook files applied, and Load's error about
// the files it left out.
func Apply(dirs []string, spec *specs.Spec) ([]string, error) {
	hooks, err := Load(dirs)
	var applied []string
	for _, h := range hooks {
		if !h.matches(spec) {
			continue
		}
		if spec.Hooks == nil {
			spec.Hooks = &specs.Hooks{}
		}
		for _, s := range h.stages {
			switch s {
			case "prestart":
				spec.Hooks.Prestart = append(spec.Hooks.Prestart, h.hook) //nolint:staticcheck // CRI-O's hook files still name it
			case "createRuntime":
				spec.Hooks.CreateRuntime = append(spec.Hooks.CreateRuntime, h.hook)
			case "createContainer":
				spec.Hooks.CreateContainer = append(spec.Hooks.CreateContainer, h.hook)
			case "startContainer":
				spec.Hooks.StartContainer = append(spec.Hooks.StartContainer, h.hook)
			case "poststart":
				spec.Hooks.Poststart = append(spec.Hooks.Poststart, h.hook)
			case "poststop":
				spec.Hooks.Poststop = append(spec.Hooks.Poststop, h.hook)
			}
		}
		applied = append(applied, h.name)
	}
	return applied, err
}
