package server

import (
	"context"
	"fmt"
	"testing"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
)

// An unfiltered answer is handed out again while nothing it depends on
// changed, and made again after any change: of a record's state, of the
// records there are, or of the set of objects being created.
func TestUnfilteredAnswerKept(t *testing.T) {
	s := fullNodeServer(t)
	ctx := context.Background()
	list := func() ([]*runtime.PodSandbox, []*runtime.Container) {
		t.Helper()
		sbs, err := s.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
		if err != nil {
			t.Fatal(err)
		}
		cs, err := s.ListContainers(ctx, &runtime.ListContainersRequest{Filter: &runtime.ContainerFilter{}})
		if err != nil {
			t.Fatal(err)
		}
		return sbs.Items, cs.Containers
	}
	find := func(cs []*runtime.Container, id string) *runtime.Container {
		for _, c := range cs {
			if c.Id == id {
				return c
			}
		}
		return nil
	}
	sbs, cs := list()
	if sbs2, cs2 := list(); !sameSlice(sbs, sbs2) || !sameSlice(cs, cs2) {
		t.Fatal("nothing changed and the unfiltered answers were made again")
	}
	if f, err := s.ListContainers(ctx, &runtime.ListContainersRequest{Filter: &runtime.ContainerFilter{PodSandboxId: fmt.Sprintf("%064x", 1)}}); err != nil || len(f.Containers) != 3 {
		t.Fatalf("filtered by pod: %v, %v", f, err)
	}

	pod, ctr := fmt.Sprintf("%064x", 1), fmt.Sprintf("%060x%04d", 1, 0)
	stopRecords(t, s, pod, ctr)
	sbs2, cs2 := list()
	if sameSlice(sbs, sbs2) || sameSlice(cs, cs2) {
		t.Fatal("the answers made before a state change were handed out after it")
	}
	if c := find(cs2, ctr); c == nil || c.State != runtime.ContainerState_CONTAINER_EXITED {
		t.Fatalf("after the change container %s is listed as %v", ctr, c)
	}

	// A container recorded while it is being created is not listed until
	// its CreateContainer returns, though no record changes then.
	id := fmt.Sprintf("%064x", 999)
	done := s.creating.add(id)
	if err := s.store.AddContainer(store.Container{
		ContainerMeta: store.ContainerMeta{ID: id, SandboxID: pod, Name: "new", CreatedAt: 1 << 40},
		Status:        store.ContainerStatus{State: store.ContainerCreated},
	}); err != nil {
		t.Fatal(err)
	}
	_, cs3 := list()
	if find(cs3, id) != nil {
		t.Fatal("a container being created is listed")
	}
	if _, again := list(); !sameSlice(cs3, again) {
		t.Fatal("nothing changed and the unfiltered answer was made again")
	}
	done()
	_, cs4 := list()
	if find(cs4, id) == nil {
		t.Fatal("a created container is not listed: the answer made while it was being created was kept")
	}
	if len(cs4) != len(cs3)+1 {
		t.Fatalf("listed %d containers, then %d after one was created", len(cs3), len(cs4))
	}

	if err := s.store.DeleteContainer(id); err != nil {
		t.Fatal(err)
	}
	if _, cs5 := list(); find(cs5, id) != nil || len(cs5) != len(cs3) {
		t.Fatal("a removed container is still listed")
	}
}
