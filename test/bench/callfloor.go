package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
)

// The floor of a CRI call: kubelet's client and a gRPC round trip over a
// unix socket to a server process that does no work (this binary run
// again). The full-node scenario times one such call beside every relist,
// so each steady-state latency row shows what any runtime pays before its
// handler runs, under the same load.
//
// A relist's answer is 250 sandboxes or 400 containers, and encoding it in
// the server and decoding it in kubelet's client cost more than the round
// trip. So the floor server is given the runtime's own answer to each
// relist and sends it back as is: the relist's floor is what a runtime
// that did nothing but send that answer would take.

// criFloorArg, as the first argument, makes the bench the floor server:
// criFloorArg SOCK [SANDBOXES CONTAINERS], the last two files holding the
// encoded ListPodSandboxResponse and ListContainersResponse to answer with.
const criFloorArg = "-cri-floor-server"

// floorRuntime answers Version, and the unfiltered relists with the answers
// it was given (the bench sends no filter to it).
type floorRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	sandboxes  *runtimeapi.ListPodSandboxResponse
	containers *runtimeapi.ListContainersResponse
}

func (floorRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "cri-floor", RuntimeVersion: "0", RuntimeApiVersion: "v1"}, nil
}

func (f floorRuntime) ListPodSandbox(context.Context, *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	if f.sandboxes == nil {
		return nil, status.Error(codes.Unimplemented, "the floor server was given no ListPodSandbox answer")
	}
	return f.sandboxes, nil
}

func (f floorRuntime) ListContainers(context.Context, *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	if f.containers == nil {
		return nil, status.Error(codes.Unimplemented, "the floor server was given no ListContainers answer")
	}
	return f.containers, nil
}

// serveCRIFloor serves the floor runtime on sock until killed; args, when
// given, are the files of its two relist answers.
func serveCRIFloor(sock string, args []string) error {
	var rt floorRuntime
	if len(args) == 2 {
		rt.sandboxes, rt.containers = &runtimeapi.ListPodSandboxResponse{}, &runtimeapi.ListContainersResponse{}
		for i, m := range []proto.Message{rt.sandboxes, rt.containers} {
			data, err := os.ReadFile(args[i])
			if err != nil {
				return err
			}
			if err := proto.Unmarshal(data, m); err != nil {
				return fmt.Errorf("decode %s: %w", args[i], err)
			}
		}
	} else if len(args) != 0 {
		return fmt.Errorf("want the socket and either no answer files or two, got %q", args)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, rt)
	return s.Serve(l)
}

// callFloor is a running floor server and kubelet's client of it.
type callFloor struct {
	proc *process
	rt   internalapi.RuntimeService
}

// relistAnswers is a runtime's answer to the two relist calls.
type relistAnswers struct {
	sandboxes  *runtimeapi.ListPodSandboxResponse
	containers *runtimeapi.ListContainersResponse
}

// startCallFloor starts a floor server in dir (a fresh one: the socket and
// answers are written there), answering the relists with a when it is set.
func startCallFloor(ctx context.Context, dir string, a *relistAnswers) (*callFloor, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "cri-floor.sock")
	args := []string{criFloorArg, sock}
	if a != nil {
		for name, m := range map[string]proto.Message{"sandboxes.pb": a.sandboxes, "containers.pb": a.containers} {
			data, err := proto.Marshal(m)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				return nil, err
			}
		}
		args = append(args, filepath.Join(dir, "sandboxes.pb"), filepath.Join(dir, "containers.pb"))
	}
	p, err := startProcess(self, args, filepath.Join(dir, "cri-floor.log"))
	if err != nil {
		return nil, err
	}
	f := &callFloor{proc: p}
	if err := waitSocket(ctx, p, sock, time.Minute); err != nil {
		f.close()
		return nil, fmt.Errorf("cri floor server: %w", err)
	}
	f.rt, err = remote.NewRemoteRuntimeServiceBuilder().WithEndpoint("unix://" + sock).WithConnectionTimeout(time.Minute).WithTracerProvider(nil).Build(ctx)
	if err != nil {
		f.close()
		return nil, fmt.Errorf("cri floor client: %w", err)
	}
	return f, nil
}

// call times one empty CRI call.
func (f *callFloor) call(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	_, err := f.rt.Version(ctx, "v1")
	return time.Since(start), err
}

func (f *callFloor) close() {
	if f.rt != nil {
		_ = f.rt.Close(context.Background())
	}
	f.proc.stop(5 * time.Second)
}
