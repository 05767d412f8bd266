package server

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
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
// pods: both list handlers and the encoding of their answers.
func BenchmarkRelistHandlers(b *testing.B) {
	s := fullNodeServer(b)
	ctx := context.Background()
	for b.Loop() {
		sbs, _ := s.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
		cs, _ := s.ListContainers(ctx, &runtime.ListContainersRequest{Filter: &runtime.ContainerFilter{}})
		if _, err := proto.Marshal(sbs); err != nil {
			b.Fatal(err)
		}
		if _, err := proto.Marshal(cs); err != nil {
			b.Fatal(err)
		}
	}
}
