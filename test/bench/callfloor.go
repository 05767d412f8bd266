package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
)

// The floor of a CRI call: kubelet's client and a gRPC round trip over a
// unix socket to a server process that does no work (this binary run
// again). The full-node scenario times one such call beside every relist,
// so each steady-state latency row shows what any runtime pays before its
// handler runs, under the same load.

// criFloorArg, as the first argument, makes the bench the floor server.
const criFloorArg = "-cri-floor-server"

// floorRuntime answers Version and nothing else.
type floorRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func (floorRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "cri-floor", RuntimeVersion: "0", RuntimeApiVersion: "v1"}, nil
}

// serveCRIFloor serves the floor runtime on sock until killed.
func serveCRIFloor(sock string) error {
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, floorRuntime{})
	return s.Serve(l)
}

// callFloor is a running floor server and kubelet's client of it.
type callFloor struct {
	proc *process
	rt   internalapi.RuntimeService
}

func startCallFloor(ctx context.Context, dir string) (*callFloor, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "cri-floor.sock")
	p, err := startProcess(self, []string{criFloorArg, sock}, filepath.Join(dir, "cri-floor.log"))
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
