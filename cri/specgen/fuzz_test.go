package specgen

import (
	"path"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzGenerate feeds arbitrary strings into the user-controlled parts of a
// request. Generate must not panic, and every mount it emits must have an
// absolute, clean destination (runc resolves relative ones against the
// rootfs in surprising ways).
func FuzzGenerate(f *testing.F) {
	f.Add("/bin/sh", "-c", "A=b", "/data", "/srv/data", "1000:1000", "net.ipv4.ip_forward")
	f.Add("", "", "=", "data", "", "app", "vm.swappiness")
	f.Add("sh", "x", "PATH", "/a/../..", "/h", "root:wheel", "kernel/shmmax")
	f.Add("\x00", "\n", "A=\x00", "/./etc//hosts/", "/..", ":", "")
	f.Fuzz(func(t *testing.T, cmd, arg, env, ctrPath, hostPath, user, sysctl string) {
		in := baseInput()
		in.Users = newFakeUsers()
		in.Image = ocispec.ImageConfig{User: user, Cmd: strings.Fields(arg), Env: []string{env}}
		in.Config.Command = strings.Fields(cmd)
		in.Config.Args = []string{arg}
		key, val, _ := strings.Cut(env, "=")
		in.Config.Envs = []*runtime.KeyValue{{Key: key, Value: []byte(val)}}
		in.Config.Mounts = []*runtime.Mount{
			{ContainerPath: ctrPath, HostPath: hostPath},
			{ContainerPath: path.Join(ctrPath, arg), HostPath: hostPath, Readonly: true},
		}
		in.Config.WorkingDir = arg
		in.Sandbox.Linux.Sysctls = map[string]string{sysctl: arg}
		in.PodFiles = PodFiles{Hosts: hostPath, Shm: hostPath}
		s, err := Generate(in)
		if err != nil {
			return
		}
		if len(s.Process.Args) == 0 {
			t.Fatal("spec without args")
		}
		for _, m := range s.Mounts {
			if !path.IsAbs(m.Destination) || path.Clean(m.Destination) != m.Destination {
				t.Fatalf("mount destination %q is not absolute and clean", m.Destination)
			}
		}
	})
}
