package server

import (
	"context"
	"fmt"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listClient serves s with its codec and returns a client using gRPC's
// own proto codec, as kubelet does.
func listClient(t *testing.T, s *Server) runtime.RuntimeServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer(grpc.ForceServerCodecV2(s.Codec()))
	runtime.RegisterRuntimeServiceServer(g, s)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return runtime.NewRuntimeServiceClient(conn)
}

// What a client decodes from the codec's list answers is what the handlers
// answered, while items are reused, after they change, and for filtered
// lists whose items are not cached.
func TestListCodecAnswers(t *testing.T) {
	s := fullNodeServer(t)
	cl := listClient(t, s)
	ctx := context.Background()
	check := func(what string, sf *runtime.PodSandboxFilter, cf *runtime.ContainerFilter) {
		t.Helper()
		want, err := s.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{Filter: sf})
		if err != nil {
			t.Fatal(err)
		}
		got, err := cl.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{Filter: sf})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("%s: ListPodSandbox decoded %d items, differing from the handler's %d", what, len(got.Items), len(want.Items))
		}
		wantC, err := s.ListContainers(ctx, &runtime.ListContainersRequest{Filter: cf})
		if err != nil {
			t.Fatal(err)
		}
		gotC, err := cl.ListContainers(ctx, &runtime.ListContainersRequest{Filter: cf})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(gotC, wantC) {
			t.Errorf("%s: ListContainers decoded %d items, differing from the handler's %d", what, len(gotC.Containers), len(wantC.Containers))
		}
	}
	check("first relist", nil, &runtime.ContainerFilter{})
	check("second relist", nil, &runtime.ContainerFilter{})
	for _, e := range s.items.sandboxes.byID {
		if !e.encoded {
			t.Fatalf("sandbox %s listed twice and its encoding not kept", e.pb.Id)
		}
	}
	if s.items.sandboxes.allEnc == nil || s.items.containers.allEnc == nil {
		t.Fatal("the unfiltered answers were sent twice and their encodings not kept")
	}

	pod := fmt.Sprintf("%064x", 1)
	ctr := fmt.Sprintf("%060x%04d", 1, 0)
	stopRecords(t, s, pod, ctr)
	// Filtered first: the changed records' new items are not cached yet.
	check("filtered by ID after a change", &runtime.PodSandboxFilter{Id: pod}, &runtime.ContainerFilter{Id: ctr})
	check("filtered by pod", &runtime.PodSandboxFilter{LabelSelector: map[string]string{"io.kubernetes.pod.name": "node-0"}}, &runtime.ContainerFilter{PodSandboxId: pod})
	check("relist after a change", nil, nil)
	check("relist after a change, again", nil, nil)
	got, err := cl.ListContainers(ctx, &runtime.ListContainersRequest{Filter: &runtime.ContainerFilter{Id: ctr}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Containers) != 1 || got.Containers[0].State != runtime.ContainerState_CONTAINER_EXITED {
		t.Errorf("changed container decoded as %v", got.Containers)
	}
	check("nothing matches", &runtime.PodSandboxFilter{Id: "f00"}, &runtime.ContainerFilter{Id: "f00"})
}

// Every other message is encoded as gRPC's proto codec encodes it.
func TestListCodecOtherMessages(t *testing.T) {
	s := fullNodeServer(t)
	c := s.Codec()
	for _, m := range []proto.Message{
		&runtime.VersionResponse{Version: "0.1.0", RuntimeName: "berth"},
		&runtime.PodSandboxStatusResponse{Status: &runtime.PodSandboxStatus{Id: "a", State: runtime.PodSandboxState_SANDBOX_READY}, Info: map[string]string{"info": "{}"}},
		&runtime.ListPodSandboxRequest{Filter: &runtime.PodSandboxFilter{Id: "a"}},
	} {
		got, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		back := m.ProtoReflect().New().Interface()
		if err := c.Unmarshal(got, back); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(back, m) {
			t.Errorf("%T: decoded %v, encoded %v", m, back, m)
		}
		got.Free()
	}
	// An answer holding more than its items is encoded whole.
	r := &runtime.ListPodSandboxResponse{Items: []*runtime.PodSandbox{{Id: "a"}}}
	r.ProtoReflect().SetUnknown([]byte{0x10, 0x01})
	enc, err := c.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(enc.Materialize()) != string(want) {
		t.Errorf("answer with an unknown field encoded as %x, want %x", enc.Materialize(), want)
	}
}
