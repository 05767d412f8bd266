package store

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestPersistAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	db := openDB(t, path)
	s, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	sb := Sandbox{ID: "aaaa1111", Name: "pod_a", Labels: map[string]string{"app": "x"}, CreatedAt: 1, Status: SandboxStatus{State: SandboxReady, IPs: []string{"10.0.0.2"}}}
	if err := s.AddSandbox(sb); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSandbox(sb); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second add: %v", err)
	}
	c := Container{ID: "bbbb2222", SandboxID: sb.ID, Name: "ctr_a", CreatedAt: 2, Status: ContainerStatus{State: ContainerCreated}}
	if err := s.AddContainer(c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateContainer(c.ID, func(c *Container) error {
		c.Status.State = ContainerExited
		c.Status.ExitCode = 7
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s2, err := Open(openDB(t, path))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Container("bbbb")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.State != ContainerExited || got.Status.ExitCode != 7 || got.Version != recordVersion {
		t.Fatalf("reloaded container = %+v", got)
	}
	gsb, err := s2.Sandbox(sb.ID)
	if err != nil || gsb.Status.IPs[0] != "10.0.0.2" || gsb.Labels["app"] != "x" {
		t.Fatalf("reloaded sandbox = %+v, %v", gsb, err)
	}
	if _, err := s2.Reserve("pod_a", "other"); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("name of a reloaded sandbox must stay reserved: %v", err)
	}
	if got := s2.ContainersOf(sb.ID); len(got) != 1 {
		t.Fatalf("ContainersOf = %d", len(got))
	}
	if err := s2.DeleteContainer(c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Container(c.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted container: %v", err)
	}
	if _, err := s2.Reserve("ctr_a", "new"); err != nil {
		t.Fatalf("name of a deleted container must be free: %v", err)
	}
}

func TestCopiesAreIndependent(t *testing.T) {
	s, err := Open(openDB(t, filepath.Join(t.TempDir(), "m.db")))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddSandbox(Sandbox{ID: "x", Name: "n", Status: SandboxStatus{IPs: []string{"1.1.1.1"}}}); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Sandbox("x")
	a.Status.IPs[0] = "changed"
	b, _ := s.Sandbox("x")
	if b.Status.IPs[0] != "1.1.1.1" {
		t.Fatal("a copy shares status with the store")
	}
}

func TestUpdateErrorPersistsNothing(t *testing.T) {
	s, err := Open(openDB(t, filepath.Join(t.TempDir(), "m.db")))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddContainer(Container{ID: "c", Name: "n"}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, err := s.UpdateContainer("c", func(c *Container) error { c.Status.ExitCode = 3; return boom }); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if c, _ := s.Container("c"); c.Status.ExitCode != 0 {
		t.Fatal("failed update was applied")
	}
}

func TestPrefixLookup(t *testing.T) {
	s, err := Open(openDB(t, filepath.Join(t.TempDir(), "m.db")))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"abc1", "abc2"} {
		if err := s.AddContainer(Container{ID: id, Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Container("abc"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("ambiguous prefix: %v", err)
	}
	if c, err := s.Container("abc2"); err != nil || c.ID != "abc2" {
		t.Errorf("exact: %v", err)
	}
	if _, err := s.Container("zzz"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	if _, err := s.Container(""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty: %v", err)
	}
}
