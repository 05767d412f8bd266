package sandbox

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// A daemon killed inside Create records only the pod's ID and Dir; Remove
// of that record must still find the pins, the shm mount and the infra
// process Create made.
func TestRemoveUnrecordedCreate(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name string
		spec func(dir string) Spec
	}{
		{"pod namespaces and infra", func(dir string) Spec { return Spec{ID: "crash1", Dir: dir, SharePID: true} }},
		{"no infra", func(dir string) Spec { return Spec{ID: "crash2", Dir: dir} }},
		{"host network and ipc", func(dir string) Spec {
			return Spec{ID: "crash3", Dir: dir, HostNetwork: true, HostIPC: true, SharePID: true}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, buildPause(t))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s := tc.spec(filepath.Join(e.root, "pods", "p"))
			p, err := e.c.Create(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			// A fresh controller, as after a restart, with the partial record.
			c2, err := New(Options{NetNSDir: e.c.netNSDir, PausePath: buildPause(t)})
			if err != nil {
				t.Fatal(err)
			}
			if p.NoInfra != !s.SharePID {
				t.Errorf("Create: NoInfra %v for SharePID %v", p.NoInfra, s.SharePID)
			}
			// What berthd records before Create: ID, Dir and whether an
			// infra process can exist at all.
			if err := c2.Remove(ctx, Pod{ID: p.ID, Dir: p.Dir, NoInfra: !s.SharePID}); err != nil {
				t.Fatalf("Remove of the partial record: %v", err)
			}
			if p.InfraPID != 0 && e.c.InfraAlive(p) {
				t.Errorf("infra process %d survived Remove of the partial record", p.InfraPID)
			}
			assertNothingLeft(t, e)
		})
	}
}
