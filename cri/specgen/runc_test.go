package specgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const runcBinary = "/usr/sbin/runc"

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// busyboxRootfs builds a minimal rootfs: /bin/busybox and /bin/sh.
func busyboxRootfs(t *testing.T, dir string) string {
	t.Helper()
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open("/bin/busybox")
	if err != nil {
		t.Skipf("busybox-static not installed: %v", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(rootfs, "bin/busybox"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"sh", "grep", "cat"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", l)); err != nil {
			t.Fatal(err)
		}
	}
	return rootfs
}

// TestRuncRunsGeneratedSpec checks that runc accepts what Generate makes:
// all namespaces new, default mounts, masked paths, cgroups, seccomp.
func TestRuncRunsGeneratedSpec(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat(runcBinary); err != nil {
		t.Skipf("runc not installed: %v", err)
	}
	script := `echo ok; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; cat /proc/timer_list | wc -c`
	tests := []struct {
		name       string
		privileged bool
		want       string
	}{
		{name: "runtime default", want: "ok\nNoNewPrivs:\t1\nSeccomp:\t2\n0\n"},
		// Unmasked: /proc/timer_list has content.
		{name: "privileged", privileged: true, want: "ok\nNoNewPrivs:\t0\nSeccomp:\t0\n"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("/tmp", "bt")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			id := fmt.Sprintf("specgen-%d-%d", os.Getpid(), i)
			parent := fmt.Sprintf("/bt-specgen-%d-%d", os.Getpid(), i)
			in := baseInput()
			in.ID = id
			in.RootfsPath = busyboxRootfs(t, dir)
			in.Namespaces = SandboxNamespaces{}
			in.CgroupParent = parent
			in.Config.Command = []string{"sh", "-c", script}
			in.Config.Linux.Resources = &runtime.LinuxContainerResources{CpuShares: 256, MemoryLimitInBytes: 64 << 20}
			s := sc(in)
			s.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}
			s.NoNewPrivs = !tt.privileged
			s.Privileged = tt.privileged
			in.Sandbox.Linux.SecurityContext.Privileged = tt.privileged
			if in.AllCaps, err = CurrentCapabilities(); err != nil {
				t.Fatal(err)
			}
			in.PodFiles.Hostname = writeTemp(t, dir, "hostname", "bt\n")
			spec := mustGenerate(t, in)

			bundle := filepath.Dir(in.RootfsPath)
			data, err := json.Marshal(spec)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			state := filepath.Join(dir, "state")
			t.Cleanup(func() { cleanupRunc(t, state, id, parent) })

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, runcBinary, "--root", state, "run", "--bundle", bundle, id)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("runc run: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
			}
			got := stdout.String()
			if !strings.HasPrefix(got, tt.want) || (!tt.privileged && got != tt.want) ||
				(tt.privileged && strings.HasSuffix(got, "\n0\n")) {
				t.Fatalf("output %q, want %q (stderr %q)", got, tt.want, stderr.String())
			}
		})
	}
}

func writeTemp(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cleanupRunc deletes the container and asserts runc removed its cgroups,
// then removes the test's cgroup parent.
func cleanupRunc(t *testing.T, state, id, parent string) {
	t.Helper()
	out, err := exec.Command(runcBinary, "--root", state, "delete", "--force", id).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "does not exist") {
		t.Errorf("runc delete: %v: %s", err, out)
	}
	ctrls, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, c := range ctrls {
		leaf := filepath.Join(c, parent, id)
		if _, err := os.Stat(leaf); err == nil {
			t.Errorf("cgroup %s left behind", leaf)
			_ = os.Remove(leaf)
		}
		_ = os.Remove(filepath.Join(c, parent))
		if _, err := os.Stat(filepath.Join(c, parent)); err == nil {
			t.Errorf("cannot remove cgroup parent %s", filepath.Join(c, parent))
		}
	}
}
