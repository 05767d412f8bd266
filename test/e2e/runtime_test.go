package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

var runtimeCases = []sharedCase{
	{"Version", testVersion},
	{"Status", testStatus},
	{"RuntimeConfig", testRuntimeConfig},
	{"SocketMode", testSocketMode},
	{"MountOptions", testMountOptions},
	{"PullForRuntimeHandler", testPullForRuntimeHandler},
}

func testVersion(t *testing.T, d *testutil.Daemon) {
	v, err := d.Runtime.Version(context.Background(), "v1")
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if v.RuntimeName != "berth" {
		t.Errorf("RuntimeName = %q, want berth", v.RuntimeName)
	}
	if v.RuntimeApiVersion != "v1" {
		t.Errorf("RuntimeApiVersion = %q, want v1", v.RuntimeApiVersion)
	}
	if v.RuntimeVersion == "" || v.Version == "" {
		t.Errorf("Version = %q, RuntimeVersion = %q: both must be set", v.Version, v.RuntimeVersion)
	}
}

func testStatus(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	for _, verbose := range []bool{false, true} {
		resp, err := d.Runtime.Status(ctx, verbose)
		if err != nil {
			t.Fatalf("Status(verbose=%v): %v", verbose, err)
		}
		conds := map[string]*runtimeapi.RuntimeCondition{}
		for _, c := range resp.GetStatus().GetConditions() {
			conds[c.Type] = c
		}
		for _, typ := range []string{runtimeapi.RuntimeReady, runtimeapi.NetworkReady} {
			c := conds[typ]
			if c == nil {
				t.Errorf("Status(verbose=%v): no %s condition in %v", verbose, typ, resp.GetStatus())
				continue
			}
			if !c.Status {
				t.Errorf("Status(verbose=%v): %s is false (reason %q, message %q)", verbose, typ, c.Reason, c.Message)
			}
		}
		if verbose && len(resp.GetInfo()) == 0 {
			t.Errorf("Status(verbose=true): empty info, want config info")
		}
	}
}

func testRuntimeConfig(t *testing.T, d *testutil.Daemon) {
	resp, err := d.Runtime.RuntimeConfig(context.Background())
	if err != nil {
		t.Fatalf("RuntimeConfig: %v", err)
	}
	if got := resp.GetLinux().GetCgroupDriver(); got != runtimeapi.CgroupDriver_CGROUPFS {
		t.Errorf("cgroup driver = %s, want CGROUPFS", got)
	}
}

// The CRI socket is for root (and a group) only: mode 0660.
func testSocketMode(t *testing.T, d *testutil.Daemon) {
	st, err := os.Stat(d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		t.Errorf("%s is not a socket: %s", d.Socket, st.Mode())
	}
	if perm := st.Mode().Perm(); perm != 0o660 {
		t.Errorf("socket mode %o, want 660", perm)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
		t.Errorf("socket owned by uid %d, want 0", sys.Uid)
	}
}

// TestConfig checks `berthd config default` and that startup stops on an
// unknown key or a bad value, naming the key.
func TestConfig(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	out, err := exec.Command(bins.Berthd, "config", "default").Output()
	if err != nil {
		t.Fatalf("berthd config default: %v", err)
	}
	var def map[string]any
	if err := toml.Unmarshal(out, &def); err != nil {
		t.Fatalf("default config is not TOML: %v\n%s", err, out)
	}
	for _, key := range []string{"root", "state", "cgroup_parent", "grpc", "log", "runtime", "registry"} {
		if _, ok := def[key]; !ok {
			t.Errorf("default config has no %q key:\n%s", key, out)
		}
	}
	if grpc, _ := def["grpc"].(map[string]any); grpc["address"] != "/run/berth/berth.sock" {
		t.Errorf("default grpc.address = %v, want /run/berth/berth.sock", grpc["address"])
	}
	reg, _ := def["registry"].(map[string]any)
	for _, key := range []string{"pull_progress_timeout", "max_layers", "max_manifest_size", "max_config_size", "max_zstd_window", "max_unpacked_size"} {
		if _, ok := reg[key]; !ok {
			t.Errorf("default config has no registry.%s:\n%s", key, out)
		}
	}
	dir, err := os.MkdirTemp("/tmp", "bc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	// Every file points root, state and the socket into dir, so a berthd
	// that wrongly accepts it touches nothing of the machine's.
	top := fmt.Sprintf("root = %q\nstate = %q\n", dir+"/root", dir+"/run")
	grpc := fmt.Sprintf("[grpc]\naddress = %q\n", dir+"/b.sock")
	for _, tc := range []struct {
		name, toml, key string
	}{
		{"unknown top-level key", top + "bogus_key = 1\n" + grpc, "bogus_key"},
		{"unknown table key", top + grpc + "bogus_addr = \"x\"\n", "bogus_addr"},
		{"bad log level", top + grpc + "[log]\nlevel = \"loud\"\n", "log.level"},
		{"relative state", fmt.Sprintf("root = %q\nstate = \"relative/dir\"\n", dir+"/root") + grpc, "state"},
		{"wrong type", top + "cgroup_parent = 3\n" + grpc, "cgroup_parent"},
		{"no layers allowed", top + grpc + "[registry]\nmax_layers = 0\n", "registry.max_layers"},
		{"negative progress timeout", top + grpc + "[registry]\npull_progress_timeout = \"-1m\"\n", "registry.pull_progress_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".toml")
			if err := os.WriteFile(path, []byte(tc.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bins.Berthd, "--config", path)
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			err := cmd.Run()
			if err == nil {
				t.Fatalf("berthd started with %q; want it to refuse", tc.toml)
			}
			if ctx.Err() != nil {
				t.Fatalf("berthd kept running with %q; want it to exit at once", tc.toml)
			}
			if !strings.Contains(stderr.String(), tc.key) {
				t.Errorf("berthd's message does not name %q: %s", tc.key, stderr.String())
			}
		})
	}
}
