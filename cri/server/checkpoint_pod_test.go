package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/checkpoint"
)

func TestParsePodCheckpointOpts(t *testing.T) {
	for _, tc := range []struct {
		in   map[string]string
		want podCheckpointOpts
		bad  bool
	}{
		{nil, podCheckpointOpts{volumes: true}, false},
		{map[string]string{"leave-stopped": "true"}, podCheckpointOpts{leaveStopped: true, volumes: true}, false},
		{map[string]string{"leave-stopped": "false", "volumes": "none"}, podCheckpointOpts{}, false},
		{map[string]string{"leave-stopped": "yes"}, podCheckpointOpts{}, true},
		{map[string]string{"volumes": "all"}, podCheckpointOpts{}, true},
		{map[string]string{"tcp-established": "true"}, podCheckpointOpts{}, true},
	} {
		got, err := parsePodCheckpointOpts(tc.in)
		if tc.bad {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("%v: %v, want InvalidArgument", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestEmptyOutputDir(t *testing.T) {
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := emptyOutputDir(t.TempDir()); err != nil {
		t.Errorf("empty dir: %v", err)
	}
	for _, dir := range []string{"", "rel", full, filepath.Join(full, "missing"), filepath.Join(full, "x")} {
		if err := emptyOutputDir(dir); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("emptyOutputDir(%q) = %v, want InvalidArgument", dir, err)
		}
	}
}

func ctrCfg(name string, mounts ...*runtime.Mount) *runtime.ContainerConfig {
	return &runtime.ContainerConfig{Metadata: &runtime.ContainerMetadata{Name: name}, Mounts: mounts}
}

func TestMatchRestoreContainers(t *testing.T) {
	dump := &checkpoint.PodDump{Containers: []checkpoint.PodContainer{{Name: "a"}, {Name: "b"}}}
	if m, err := matchRestoreContainers(dump, []*runtime.ContainerConfig{ctrCfg("b"), ctrCfg("a")}); err != nil || m["a"].Name != "a" || m["b"].Name != "b" {
		t.Errorf("match = %v, %v", m, err)
	}
	for name, cfgs := range map[string][]*runtime.ContainerConfig{
		"none":    nil,
		"missing": {ctrCfg("a")},
		"extra":   {ctrCfg("a"), ctrCfg("b"), ctrCfg("c")},
		"twice":   {ctrCfg("a"), ctrCfg("a"), ctrCfg("b")},
		"no name": {ctrCfg("a"), ctrCfg("b"), ctrCfg("")},
	} {
		if _, err := matchRestoreContainers(dump, cfgs); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestCheckRestoreProcess(t *testing.T) {
	s := &Server{}
	pc := &checkpoint.PodContainer{
		Name: "c", Image: "busybox", Args: []string{"/entry", "sh", "-c", "x"}, Cwd: "/w", Env: []string{"A=1", "PATH=/bin"},
	}
	for _, tc := range []struct {
		name string
		cfg  *runtime.ContainerConfig
		ok   bool
	}{
		{"nothing said", &runtime.ContainerConfig{}, true},
		{"same", &runtime.ContainerConfig{Image: &runtime.ImageSpec{Image: "busybox"}, Command: []string{"/entry", "sh"}, Args: []string{"-c", "x"},
			WorkingDir: "/w", Envs: []*runtime.KeyValue{{Key: "A", Value: []byte("1")}}}, true},
		{"args only", &runtime.ContainerConfig{Args: []string{"-c", "x"}}, true},
		{"other command", &runtime.ContainerConfig{Command: []string{"sh"}}, false},
		{"other args", &runtime.ContainerConfig{Args: []string{"-c", "y"}}, false},
		{"too many args", &runtime.ContainerConfig{Args: []string{"0", "1", "2", "3", "4"}}, false},
		{"other cwd", &runtime.ContainerConfig{WorkingDir: "/"}, false},
		{"other env", &runtime.ContainerConfig{Envs: []*runtime.KeyValue{{Key: "A", Value: []byte("2")}}}, false},
	} {
		err := s.checkRestoreProcess(context.Background(), tc.cfg, pc)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, errdefs.ErrInvalidArgument)) {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestVolumeTargets(t *testing.T) {
	byName := map[string]*checkpoint.PodContainer{
		"a": {Name: "a", Mounts: []checkpoint.VolumeMount{{ContainerPath: "/data", Volume: "v0"}}},
		"b": {Name: "b", Mounts: []checkpoint.VolumeMount{{ContainerPath: "/shared/", Volume: "v0"}}},
	}
	got, err := volumeTargets(byName, []*runtime.ContainerConfig{
		ctrCfg("a", &runtime.Mount{ContainerPath: "/data", HostPath: "/new/vol"}, &runtime.Mount{ContainerPath: "/etc/x", HostPath: "/x"}),
		ctrCfg("b", &runtime.Mount{ContainerPath: "/shared", HostPath: "/new/vol/"}),
	})
	if err != nil || len(got) != 1 || len(got["v0"]) != 1 || got["v0"][0] != "/new/vol" {
		t.Errorf("volumeTargets = %v, %v; want v0 -> [/new/vol]", got, err)
	}
	for name, cfgs := range map[string][]*runtime.ContainerConfig{
		"mount missing": {ctrCfg("a", &runtime.Mount{ContainerPath: "/data", HostPath: "/v"}), ctrCfg("b")},
		"relative host": {ctrCfg("a", &runtime.Mount{ContainerPath: "/data", HostPath: "v"}), ctrCfg("b", &runtime.Mount{ContainerPath: "/shared", HostPath: "/v"})},
	} {
		if _, err := volumeTargets(byName, cfgs); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestVolumeSet(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	v := volumeSet{opts: podCheckpointOpts{volumes: true}}
	if a, b := v.add(&runtime.Mount{HostPath: dir}), v.add(&runtime.Mount{HostPath: link}); a == "" || a != b {
		t.Errorf("one directory through two paths: volumes %q, %q; want one", a, b)
	}
	for name, m := range map[string]*runtime.Mount{
		"read-only": {HostPath: t.TempDir(), Readonly: true},
		"file":      {HostPath: file},
		"missing":   {HostPath: filepath.Join(dir, "none")},
	} {
		if got := v.add(m); got != "" {
			t.Errorf("%s mount saved as volume %q", name, got)
		}
	}
	if len(v.list) != 1 {
		t.Errorf("volumes %v, want 1", v.list)
	}
	off := volumeSet{}
	if got := off.add(&runtime.Mount{HostPath: dir}); got != "" {
		t.Errorf("volumes=none still saved %q", got)
	}
}
