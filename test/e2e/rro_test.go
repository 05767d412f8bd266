package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestRecursiveReadOnly checks Mount.recursive_read_only (issue 6 item 2,
// critest "Container Mount Readonly"): a submount of a recursively
// read-only volume is read-only too, a plain read-only volume leaves it
// writable, and the CRI's preconditions (readonly, PRIVATE propagation)
// are enforced with InvalidArgument.
func TestRecursiveReadOnly(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	t.Cleanup(func() {
		removeAllPods(t, d)
		testutil.AssertNoLeaks(t, d)
	})
	if !handlerSupports(t, d, func(f *runtimeapi.RuntimeHandlerFeatures) bool { return f.GetRecursiveReadOnlyMounts() }) {
		t.Skip("the default runtime handler has no rro mount option (run make setup for runc 1.5.2)")
	}
	host := t.TempDir()
	sub := filepath.Join(host, "tmpfs")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("none", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(sub, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount tmpfs: %v", err)
		}
	})
	pod := podConfig(t, d, "rro")
	podID := runPod(t, d, pod)

	probe := func(name string, rro bool) string {
		cfg := shConfig(name, "touch /mnt/tmpfs/f 2>&1 && echo sub=rw; touch /mnt/top 2>&1 || echo top=ro")
		cfg.Mounts = []*runtimeapi.Mount{{HostPath: host, ContainerPath: "/mnt", Readonly: true, RecursiveReadOnly: rro}}
		_, out, _ := runToExit(t, d, podID, pod, cfg)
		return out
	}
	if out := probe("ro", false); !strings.Contains(out, "sub=rw") || !strings.Contains(out, "top=ro") {
		t.Errorf("read-only (not recursive): output %q, want the submount writable and the top read-only", out)
	}
	if out := probe("rro", true); strings.Contains(out, "sub=rw") || !strings.Contains(out, "Read-only file system") || !strings.Contains(out, "top=ro") {
		t.Errorf("recursive read-only: output %q, want both read-only", out)
	}

	for name, m := range map[string]*runtimeapi.Mount{
		"not readonly":      {HostPath: host, ContainerPath: "/mnt", RecursiveReadOnly: true},
		"host-to-container": {HostPath: host, ContainerPath: "/mnt", Readonly: true, RecursiveReadOnly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
		"bidirectional":     {HostPath: host, ContainerPath: "/mnt", Readonly: true, RecursiveReadOnly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
	} {
		cfg := shConfig("bad", "true")
		cfg.Mounts = []*runtimeapi.Mount{m}
		_, err := d.Runtime.CreateContainer(context.Background(), podID, cfg, pod)
		wantCode(t, name, err, codes.InvalidArgument)
	}
	removePod(t, d, podID)
}
