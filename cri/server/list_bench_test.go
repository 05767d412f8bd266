package server

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/store/storetest"
)

// fullNodeServer is a server whose store holds what the full-node bench
// runs: 250 pods, every third with three containers, labelled as kubelet
// labels them.
func fullNodeServer(tb testing.TB) *Server {
	tb.Helper()
	st := storetest.Open(tb)
	at := int64(1)
	for i := range 250 {
		id := fmt.Sprintf("%064x", i+1)
		uid := fmt.Sprintf("%032x", i+1)
		labels := map[string]string{"io.kubernetes.pod.name": fmt.Sprintf("node-%d", i), "io.kubernetes.pod.namespace": "bench", "io.kubernetes.pod.uid": uid}
		if err := st.AddSandbox(store.Sandbox{
			SandboxMeta: store.SandboxMeta{ID: id, Name: "pod_" + id, Labels: labels, CreatedAt: at, Metadata: store.PodMetadata{Name: fmt.Sprintf("node-%d", i), UID: uid, Namespace: "bench"}},
			Status:      store.SandboxStatus{State: store.SandboxReady},
		}); err != nil {
			tb.Fatal(err)
		}
		at++
		n := 1
		if i%3 == 0 {
			n = 3
		}
		for j := range n {
			c := store.Container{
				ContainerMeta: store.ContainerMeta{
					ID: fmt.Sprintf("%060x%04d", i+1, j), SandboxID: id, Name: fmt.Sprintf("ctr%d_%s", j, id), CreatedAt: at,
					Metadata: store.ContainerMetadata{Name: fmt.Sprintf("ctr%d", j)},
					Labels:   map[string]string{"io.kubernetes.container.name": fmt.Sprintf("ctr%d", j), "io.kubernetes.pod.uid": uid},
					Image:    "127.0.0.1:5000/busybox:1.36", ImageRef: "127.0.0.1:5000/busybox@sha256:" + fmt.Sprintf("%064x", 7), ImageID: "sha256:" + fmt.Sprintf("%064x", 8),
				},
				Status: store.ContainerStatus{State: store.ContainerRunning},
			}
			if err := st.AddContainer(c); err != nil {
				tb.Fatal(err)
			}
			at++
		}
	}
	return &Server{store: st}
}

// BenchmarkRelistHandlers is berthd's side of one PLEG relist at 250
// pods: both list handlers and the encoding of their answers, by gRPC's
// proto codec (proto) and by berthd's (Codec), with nothing changed since
// the relist before (the kept answers are sent again) or with a change
// before every relist (changed: each answer is made and encoded again,
// from the kept items and their encodings).
func BenchmarkRelistHandlers(b *testing.B) {
	for _, c := range []struct {
		name    string
		codec   func(*Server) encoding.CodecV2
		changed bool
	}{
		{"proto", func(*Server) encoding.CodecV2 { return encoding.GetCodecV2(grpcproto.Name) }, false},
		{"codec", (*Server).Codec, false},
		{"codec-changed", (*Server).Codec, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := fullNodeServer(b)
			codec := c.codec(s)
			ctx := context.Background()
			for b.Loop() {
				if c.changed {
					// A change of the in-flight set: it invalidates both
					// answers as a record's change does, without a write
					// to the store's file.
					s.creating.add("changed")()
				}
				sbs, _ := s.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
				cs, _ := s.ListContainers(ctx, &runtime.ListContainersRequest{Filter: &runtime.ContainerFilter{}})
				for _, m := range []any{sbs, cs} {
					enc, err := codec.Marshal(m)
					if err != nil {
						b.Fatal(err)
					}
					enc.Free()
				}
			}
		})
	}
}

// stopRecords makes pod NOTREADY and ctr EXITED in s's store.
func stopRecords(t *testing.T, s *Server, pod, ctr string) {
	t.Helper()
	if _, err := s.store.UpdateSandboxStatus(pod, func(st store.SandboxStatus) (store.SandboxStatus, error) {
		st.State = store.SandboxNotReady
		return st, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.UpdateContainerStatus(ctr, func(st store.ContainerStatus) (store.ContainerStatus, error) {
		st.State = store.ContainerExited
		return st, nil
	}); err != nil {
		t.Fatal(err)
	}
}

// The list items reused from one relist to the next follow every change
// of the records: state, removal, a record made again under an ID.
func TestListItemsFollowRecords(t *testing.T) {
	s := fullNodeServer(t)
	ctx := context.Background()
	sandboxes := func(f *runtime.PodSandboxFilter) map[string]*runtime.PodSandbox {
		t.Helper()
		r, err := s.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]*runtime.PodSandbox{}
		for _, it := range r.Items {
			m[it.Id] = it
		}
		return m
	}
	containers := func(f *runtime.ContainerFilter) map[string]*runtime.Container {
		t.Helper()
		r, err := s.ListContainers(ctx, &runtime.ListContainersRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]*runtime.Container{}
		for _, it := range r.Containers {
			m[it.Id] = it
		}
		return m
	}
	first, firstC := sandboxes(nil), containers(&runtime.ContainerFilter{}) // kubelet's relist sends an empty container filter
	pod, other := fmt.Sprintf("%064x", 1), fmt.Sprintf("%064x", 2)
	ctr := fmt.Sprintf("%060x%04d", 1, 0)
	if first[pod] == nil || firstC[ctr] == nil {
		t.Fatalf("pod %s or container %s not listed", pod, ctr)
	}
	if again := sandboxes(nil); again[pod] != first[pod] {
		t.Error("an unchanged sandbox got a new item")
	}

	stopRecords(t, s, pod, ctr)
	got, gotC := sandboxes(nil), containers(nil)
	if got[pod].State != runtime.PodSandboxState_SANDBOX_NOTREADY || gotC[ctr].State != runtime.ContainerState_CONTAINER_EXITED {
		t.Errorf("after the state changes: sandbox %v, container %v", got[pod].State, gotC[ctr].State)
	}
	if first[pod].State != runtime.PodSandboxState_SANDBOX_READY || firstC[ctr].State != runtime.ContainerState_CONTAINER_RUNNING {
		t.Error("an item already handed out was changed")
	}
	if got[other] != first[other] {
		t.Error("an unchanged sandbox got a new item after another one changed")
	}
	if f := sandboxes(&runtime.PodSandboxFilter{State: &runtime.PodSandboxStateValue{State: runtime.PodSandboxState_SANDBOX_NOTREADY}}); len(f) != 1 || f[pod] == nil {
		t.Errorf("filtered by state NOTREADY: %d items", len(f))
	}

	// Removed, then made again under the same ID with other labels.
	for _, c := range s.store.ContainersOf(other) {
		if err := s.store.DeleteContainer(c.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.store.DeleteSandbox(other); err != nil {
		t.Fatal(err)
	}
	if got := sandboxes(nil); got[other] != nil {
		t.Error("a removed sandbox is listed")
	}
	if _, ok := s.items.sandboxes.byID[other]; ok {
		t.Error("a removed sandbox's item is kept after a list without a filter")
	}
	if err := s.store.AddSandbox(store.Sandbox{
		SandboxMeta: store.SandboxMeta{ID: other, Name: "again", Labels: map[string]string{"made": "again"}, CreatedAt: 1 << 40},
		Status:      store.SandboxStatus{State: store.SandboxReady},
	}); err != nil {
		t.Fatal(err)
	}
	if f := sandboxes(&runtime.PodSandboxFilter{Id: other}); f[other] == nil || f[other].Labels["made"] != "again" {
		t.Errorf("the sandbox made again is listed as %v", f[other])
	}
	if _, ok := s.items.sandboxes.byID[other]; ok {
		t.Error("a filtered list added to the kept items")
	}
	if got := sandboxes(nil); got[other] == nil || got[other].Labels["made"] != "again" {
		t.Errorf("the sandbox made again is listed as %v", got[other])
	}

	// Made again under its ID while its old item is still kept.
	third := fmt.Sprintf("%064x", 3)
	for _, c := range s.store.ContainersOf(third) {
		if err := s.store.DeleteContainer(c.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.store.DeleteSandbox(third); err != nil {
		t.Fatal(err)
	}
	if err := s.store.AddSandbox(store.Sandbox{
		SandboxMeta: store.SandboxMeta{ID: third, Name: "third again", Labels: map[string]string{"made": "again"}, CreatedAt: 1<<40 + 1},
		Status:      store.SandboxStatus{State: store.SandboxReady},
	}); err != nil {
		t.Fatal(err)
	}
	if got := sandboxes(nil); got[third] == nil || got[third].Labels["made"] != "again" {
		t.Errorf("the sandbox made again while its item was kept is listed as %v", got[third])
	}
}
