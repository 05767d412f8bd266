// Command podresize sends one CRI UpdatePodSandboxResources, which crictl
// has no command for. The node VM's lifecycle part uses it to resize a
// pod under the systemd cgroup driver.
//
// Usage: podresize -endpoint unix:///run/berth/berth.sock -pod ID -memory BYTES [-cpu-quota N -cpu-period N -cpu-shares N]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	endpoint := flag.String("endpoint", "unix:///run/berth/berth.sock", "CRI endpoint")
	pod := flag.String("pod", "", "pod sandbox id")
	memory := flag.Int64("memory", 0, "memory limit in bytes (0: unset)")
	quota := flag.Int64("cpu-quota", 0, "CFS quota in microseconds (0: unset)")
	period := flag.Int64("cpu-period", 0, "CFS period in microseconds (0: unset)")
	shares := flag.Int64("cpu-shares", 0, "CPU shares (0: unset)")
	flag.Parse()
	if *pod == "" {
		fmt.Fprintln(os.Stderr, "podresize: -pod is required")
		os.Exit(2)
	}
	if err := resize(*endpoint, &runtime.UpdatePodSandboxResourcesRequest{
		PodSandboxId: *pod,
		Resources: &runtime.LinuxContainerResources{
			MemoryLimitInBytes: *memory, CpuQuota: *quota, CpuPeriod: *period, CpuShares: *shares,
		},
	}); err != nil {
		fmt.Fprintln(os.Stderr, "podresize:", err)
		os.Exit(1)
	}
}

func resize(endpoint string, req *runtime.UpdatePodSandboxResourcesRequest) error {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", endpoint, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := runtime.NewRuntimeServiceClient(conn).UpdatePodSandboxResources(ctx, req); err != nil {
		return fmt.Errorf("UpdatePodSandboxResources of %s: %w", req.GetPodSandboxId(), err)
	}
	return nil
}
