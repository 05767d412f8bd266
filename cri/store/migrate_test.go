package store

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

const (
	v1SandboxID   = "5b1e0a7d3c9f4e2a8b6d1c0f9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a"
	v1ContainerID = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"
)

// seed writes raw records into a fresh metadata file, as an earlier berthd
// left them.
func seed(t *testing.T, path string, sandboxes, containers map[string][]byte) {
	t.Helper()
	db := openDB(t, path)
	defer db.Close()
	err := db.Update(func(tx *bolt.Tx) error {
		for bucket, recs := range map[string]map[string][]byte{"sandboxes": sandboxes, "containers": containers} {
			b, err := tx.CreateBucketIfNotExists([]byte(bucket))
			if err != nil {
				return err
			}
			for k, v := range recs {
				if err := b.Put([]byte(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The fixtures were written by the version-1 store (berth main before
// records split metadata from status): json.Marshal of its Sandbox and
// Container, with the sandbox controller's Pod at the top of the record
// and resources only inside the encoded config.
func TestOpenMigratesVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	seed(t, path,
		map[string][]byte{v1SandboxID: fixture(t, "v1-sandbox.json")},
		map[string][]byte{v1ContainerID: fixture(t, "v1-container.json")})

	check := func(s *Store) {
		t.Helper()
		sb, err := s.Sandbox(v1SandboxID)
		if err != nil {
			t.Fatal(err)
		}
		wantPod := Pod{
			ID: v1SandboxID, Dir: "/var/lib/berth/sandboxes/5b1e",
			NetNS: "/run/berth/netns/5b1e", IPCNS: "/run/berth/ipcns/5b1e", UTSNS: "/run/berth/utsns/5b1e",
			HostnamePath: "/var/lib/berth/sandboxes/5b1e/hostname", HostsPath: "/var/lib/berth/sandboxes/5b1e/hosts",
			ResolvPath: "/var/lib/berth/sandboxes/5b1e/resolv.conf", ShmPath: "/var/lib/berth/sandboxes/5b1e/shm",
			InfraPID: 4242, InfraStartTime: 123456,
		}
		if sb.Status.Pod != wantPod {
			t.Errorf("pod = %+v, want %+v", sb.Status.Pod, wantPod)
		}
		if sb.Status.State != SandboxReady || !reflect.DeepEqual(sb.Status.IPs, []string{"10.89.0.7"}) ||
			sb.Name != "pod_web_default_uid-1_1" || sb.Metadata.UID != "uid-1" || sb.Labels["app"] != "web" ||
			sb.RuntimeHandler != "runc" || sb.CgroupParent != "/kubepods/poduid-1" || sb.CreatedAt != 1764840000000000000 {
			t.Errorf("sandbox = %+v", sb)
		}
		if sb.Config.GetHostname() != "web" || sb.Config.GetLogDirectory() != "/var/log/pods/default_web_uid-1" ||
			sb.Config.GetLinux().GetCgroupParent() != "/kubepods/poduid-1" {
			t.Errorf("sandbox config = %v", sb.Config)
		}
		if want := (Resources{CPUShares: 512, MemoryLimitInBytes: 256 << 20}); !reflect.DeepEqual(sb.Status.Resources, want) {
			t.Errorf("sandbox resources = %+v, want %+v", sb.Status.Resources, want)
		}
		if want := (Resources{CPUShares: 10}); !reflect.DeepEqual(sb.Status.Overhead, want) {
			t.Errorf("sandbox overhead = %+v, want %+v", sb.Status.Overhead, want)
		}

		c, err := s.Container(v1ContainerID)
		if err != nil {
			t.Fatal(err)
		}
		if c.Status.State != ContainerRunning || c.Status.Pid != 4343 || c.SandboxID != v1SandboxID ||
			c.StopSignal != "SIGQUIT" || c.Bundle != "/run/berth/containers/9f8e" || c.Metadata.Attempt != 2 {
			t.Errorf("container = %+v", c)
		}
		if !c.Config.GetTty() || c.Config.GetMounts()[0].GetHostPath() != "/srv/data" || c.Config.GetImage().GetUserSpecifiedImage() != "busybox" {
			t.Errorf("container config = %v", c.Config)
		}
		want := Resources{CPUPeriod: 100000, CPUQuota: 50000, MemoryLimitInBytes: 128 << 20, OOMScoreAdj: 900,
			HugepageLimits: []HugepageLimit{{PageSize: "2MB"}}, Unified: map[string]string{"memory.high": "100000000"}}
		if !reflect.DeepEqual(c.Status.Resources, want) {
			t.Errorf("container resources = %+v, want %+v", c.Status.Resources, want)
		}
		if _, err := s.Reserve(sb.Name, "other"); !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Errorf("a migrated sandbox's name is free: %v", err)
		}
	}

	db := openDB(t, path)
	s, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	check(s)
	// Open wrote the records back in the current version.
	err = db.View(func(tx *bolt.Tx) error {
		for _, k := range [][2]string{{"sandboxes", v1SandboxID}, {"containers", v1ContainerID}} {
			var rec struct {
				Version int
				Pod     *Pod
			}
			if err := json.Unmarshal(tx.Bucket([]byte(k[0])).Get([]byte(k[1])), &rec); err != nil {
				return err
			}
			if rec.Version != recordVersion || rec.Pod != nil {
				t.Errorf("%s record after Open: version %d, top-level pod %v", k[0], rec.Version, rec.Pod)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	// The rewritten records read the same.
	db = openDB(t, path)
	defer db.Close()
	if s, err = Open(db); err != nil {
		t.Fatal(err)
	}
	check(s)
}

func TestOpenRefusesNewerVersion(t *testing.T) {
	for _, bucket := range []string{"sandboxes", "containers"} {
		t.Run(bucket, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "meta.db")
			recs := map[string][]byte{"x": []byte(`{"Version":3,"ID":"x","Name":"n"}`)}
			if bucket == "sandboxes" {
				seed(t, path, recs, nil)
			} else {
				seed(t, path, nil, recs)
			}
			db := openDB(t, path)
			defer db.Close()
			if _, err := Open(db); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("Open with a version-3 record: %v", err)
			}
		})
	}
}
