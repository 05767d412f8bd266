package specgen

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A YAML spec with spec-wide and per-device edits, as vendors ship them.
const cdiYAML = `cdiVersion: "0.6.0"
kind: berth.test/gpu
containerEdits:
  env: ["GPU_VENDOR=berth"]
devices:
- name: "0"
  containerEdits:
    env: ["GPU0=yes"]
    deviceNodes:
    - path: /dev/berth-gpu0
      hostPath: /dev/null
    mounts:
    - hostPath: /opt/gpu/lib
      containerPath: /usr/lib/gpu
      options: [ro, rbind]
    hooks:
    - hookName: createContainer
      path: /usr/bin/gpu-hook
      args: [gpu-hook, setup]
- name: "1"
  containerEdits:
    env: ["GPU1=yes"]
    deviceNodes:
    - path: /dev/berth-gpu1
      hostPath: /dev/zero
      permissions: r
`

// A JSON spec in a second directory, which wins for the device both name.
const cdiJSON = `{"cdiVersion": "0.6.0", "kind": "berth.test/nic",
 "devices": [{"name": "a", "containerEdits": {"env": ["NIC=a"]}}]}`

const cdiJSONOverride = `{"cdiVersion": "0.6.0", "kind": "berth.test/gpu",
 "devices": [{"name": "1", "containerEdits": {"env": ["GPU1=override"]}}]}`

func cdiDirs(t *testing.T) []string {
	t.Helper()
	etc, run := t.TempDir(), t.TempDir()
	for p, data := range map[string]string{
		filepath.Join(etc, "gpu.yaml"):    cdiYAML,
		filepath.Join(etc, "nic.json"):    cdiJSON,
		filepath.Join(run, "gpu-1.json"):  cdiJSONOverride,
		filepath.Join(etc, "broken.yaml"): "cdiVersion: [\n",
	} {
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return []string{etc, run, filepath.Join(t.TempDir(), "missing")}
}

func TestCDIDevices(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  *runtime.ContainerConfig
		want []string
		err  error
	}{
		{name: "none", cfg: &runtime.ContainerConfig{}},
		{name: "field then annotations, once each", cfg: &runtime.ContainerConfig{
			CDIDevices: []*runtime.CDIDevice{{Name: "berth.test/gpu=1"}},
			Annotations: map[string]string{
				"cdi.k8s.io/b-plugin_x": "berth.test/nic=a",
				"cdi.k8s.io/a-plugin_y": "berth.test/gpu=0, berth.test/gpu=1",
				"other":                 "berth.test/gpu=9",
			},
		}, want: []string{"berth.test/gpu=1", "berth.test/gpu=0", "berth.test/nic=a"}},
		{name: "unqualified field", cfg: &runtime.ContainerConfig{CDIDevices: []*runtime.CDIDevice{{Name: "gpu0"}}}, err: errdefs.ErrInvalidArgument},
		{name: "unqualified annotation", cfg: &runtime.ContainerConfig{Annotations: map[string]string{"cdi.k8s.io/x": "vendor/gpu"}}, err: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CDIDevices(tc.cfg)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("CDIDevices = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestGenerateInjectsCDI(t *testing.T) {
	reg := NewCDIRegistry(cdiDirs(t))
	in := baseInput()
	in.CDI = reg
	in.Config.CDIDevices = []*runtime.CDIDevice{{Name: "berth.test/gpu=0"}, {Name: "berth.test/gpu=1"}}
	in.Config.Annotations = map[string]string{"cdi.k8s.io/nic": "berth.test/nic=a"}
	s := mustGenerate(t, in)

	for _, want := range []string{"GPU_VENDOR=berth", "GPU0=yes", "GPU1=override", "NIC=a"} {
		if !slices.Contains(s.Process.Env, want) {
			t.Errorf("env %q lacks %q", s.Process.Env, want)
		}
	}
	var gpu0 *specs.LinuxDevice
	for i, d := range s.Linux.Devices {
		if d.Path == "/dev/berth-gpu0" {
			gpu0 = &s.Linux.Devices[i]
		}
		if d.Path == "/dev/berth-gpu1" {
			t.Errorf("device of the overridden gpu=1 spec injected: %+v", d)
		}
	}
	if gpu0 == nil || gpu0.Type != "c" || gpu0.Major != 1 || gpu0.Minor != 3 {
		t.Fatalf("device /dev/berth-gpu0 = %+v, want char 1:3 (/dev/null)", gpu0)
	}
	allowed := false
	for _, r := range s.Linux.Resources.Devices {
		if r.Allow && r.Type == "c" && r.Major != nil && *r.Major == 1 && r.Minor != nil && *r.Minor == 3 && r.Access == "rwm" {
			allowed = true
		}
	}
	if !allowed {
		t.Errorf("no cgroup rule allows c 1:3: %+v", s.Linux.Resources.Devices)
	}
	if m, i := findMount(s, "/usr/lib/gpu"); i < 0 || m.Source != "/opt/gpu/lib" || !slices.Contains(m.Options, "ro") {
		t.Errorf("mount /usr/lib/gpu = %+v (index %d)", m, i)
	}
	if s.Hooks == nil || len(s.Hooks.CreateContainer) != 1 || s.Hooks.CreateContainer[0].Path != "/usr/bin/gpu-hook" {
		t.Errorf("hooks = %+v", s.Hooks)
	}
}

func TestCDIErrors(t *testing.T) {
	reg := NewCDIRegistry(cdiDirs(t))
	for _, tc := range []struct {
		name   string
		device string
		err    error
		msg    []string
	}{
		// The broken spec file is named, since it may be the missing device's.
		{"unknown device", "berth.test/gpu=7", errdefs.ErrNotFound, []string{"berth.test/gpu=7", "not found", "broken.yaml"}},
		{"unknown vendor", "other.vendor/x=1", errdefs.ErrNotFound, []string{"other.vendor/x=1"}},
		{"unqualified", "gpu=0", errdefs.ErrInvalidArgument, []string{"gpu=0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput()
			in.CDI = reg
			in.Config.CDIDevices = []*runtime.CDIDevice{{Name: tc.device}}
			_, err := Generate(in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q lacks %q", err, m)
				}
			}
		})
	}
}

// A device whose host node is gone cannot be injected: a precondition of
// the node, not a bad request.
func TestCDIMissingHostNode(t *testing.T) {
	dir := t.TempDir()
	spec := `{"cdiVersion": "0.6.0", "kind": "berth.test/gone",
 "devices": [{"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/berth-nonexistent-node"}]}}]}`
	if err := os.WriteFile(filepath.Join(dir, "gone.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	in := baseInput()
	in.CDI = NewCDIRegistry([]string{dir})
	in.Config.CDIDevices = []*runtime.CDIDevice{{Name: "berth.test/gone=0"}}
	if _, err := Generate(in); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("err = %v, want FailedPrecondition", err)
	}
}

func TestSystemdCgroupsPath(t *testing.T) {
	for _, tc := range []struct {
		parent  string
		systemd bool
		want    string
	}{
		{"", false, "/berth/c1"},
		{"/kubepods/besteffort/pod1", false, "/kubepods/besteffort/pod1/c1"},
		{"", true, "berth.slice:berth:c1"},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice", true, "kubepods-besteffort-pod1.slice:berth:c1"},
	} {
		in := baseInput()
		in.CgroupParent, in.SystemdCgroup = tc.parent, tc.systemd
		if got := mustGenerate(t, in).Linux.CgroupsPath; got != tc.want {
			t.Errorf("parent %q systemd %v: cgroupsPath %q, want %q", tc.parent, tc.systemd, got, tc.want)
		}
	}
	in := baseInput()
	in.CgroupParent, in.SystemdCgroup = "not-a-slice", true
	if _, err := Generate(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad systemd parent: %v, want InvalidArgument", err)
	}
}
