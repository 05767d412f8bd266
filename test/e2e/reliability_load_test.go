package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestReliabilityLoad runs 100 pods with a container each from 20
// concurrent clients (each its own connection), checks all run with their
// own address, removes them all and checks nothing is left.
func TestReliabilityLoad(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	pods, clients := stressInt("BERTH_STRESS_PODS", 100), 20
	if pods > 250 {
		pods = 250 // one /24
	}
	net := testutil.NewBridgeNet(t)
	d := testutil.StartDaemon(t, testutil.DaemonOptions{
		Binaries: bins, InsecureHosts: []string{reg.Host}, CNIConfList: net.ConfList(), RPCTimeout: 2 * time.Minute,
	})
	ensureImage(t, d, images.Busybox.Ref)
	type made struct{ pod, ctr string }
	results := make(chan made, pods)
	work := make(chan int, pods)
	for i := range pods {
		work <- i
	}
	close(work)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		_, rc := dialCRI(t, d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			for i := range work {
				pod := podConfig(t, d, fmt.Sprintf("load-%d", i))
				pr, err := rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
				if err != nil {
					t.Errorf("RunPodSandbox %d: %v", i, err)
					continue
				}
				cfg := ctrConfig("c", images.Busybox.Ref, "sleep", "3600")
				cr, err := rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pr.PodSandboxId, Config: cfg, SandboxConfig: pod})
				if err != nil {
					t.Errorf("CreateContainer %d: %v", i, err)
					results <- made{pod: pr.PodSandboxId}
					continue
				}
				if _, err := rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
					t.Errorf("StartContainer %d: %v", i, err)
				}
				results <- made{pod: pr.PodSandboxId, ctr: cr.ContainerId}
			}
		}()
	}
	wg.Wait()
	close(results)
	created := time.Since(start)
	ctx := context.Background()
	ips := map[string]string{}
	var all []made
	for m := range results {
		all = append(all, m)
	}
	for _, m := range all {
		st, err := d.RuntimeClient.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: m.pod})
		if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			t.Errorf("pod %s: %v, %v; want READY", m.pod, st.GetStatus().GetState(), err)
			continue
		}
		ip := st.Status.GetNetwork().GetIp()
		if other, dup := ips[ip]; dup || ip == "" {
			t.Errorf("pod %s has address %q, also given to %s", m.pod, ip, other)
		}
		ips[ip] = m.pod
		if m.ctr != "" {
			if cs := ctrStatus(t, d, m.ctr); cs.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Errorf("container %s is %s, want RUNNING", m.ctr, cs.State)
			}
		}
	}
	if len(all) != pods || net.Addresses() != pods {
		t.Errorf("%d pods made, host-local holds %d addresses; want %d", len(all), net.Addresses(), pods)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	bad, err := checkConsistency(cctx, d, d.RuntimeClient)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Error(b)
	}

	start = time.Now()
	rm := make(chan string, len(all))
	for _, m := range all {
		rm <- m.pod
	}
	close(rm)
	for range clients {
		_, rc := dialCRI(t, d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			for id := range rm {
				if _, err := rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
					t.Errorf("StopPodSandbox %s: %v", id, err)
				}
				if _, err := rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
					t.Errorf("RemovePodSandbox %s: %v", id, err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d pods from %d clients: created and started in %s, removed in %s", pods, clients, created.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	testutil.AssertNothingLeft(t, d, net)
}

// TestReliabilityConcurrentSamePod races lifecycle calls on one pod: stop
// the pod while a container is created and started in it, remove a
// container while it starts. Whatever order wins, the end state must match
// the kernel, a stopped pod runs nothing, and removal leaves nothing.
func TestReliabilityConcurrentSamePod(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	ensureImage(t, d, images.Busybox.Ref)
	_, rc := dialCRI(t, d)
	ctx := context.Background()
	for round := range 8 {
		pod := podConfig(t, d, fmt.Sprintf("race-%d", round))
		podID := runPod(t, d, pod)
		var wg sync.WaitGroup
		wg.Add(2)
		var stopErr error
		go func() {
			defer wg.Done()
			cr, err := rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ctrConfig("a", images.Busybox.Ref, "sleep", "3600"), SandboxConfig: pod})
			if err == nil {
				_, _ = rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
			}
		}()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(round*15) * time.Millisecond)
			_, stopErr = rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
		}()
		wg.Wait()
		if stopErr != nil {
			t.Errorf("round %d: StopPodSandbox racing a create: %v", round, stopErr)
		}
		// A pod that was stopped (the stop returned) must run nothing, even
		// if the start came after it.
		if _, err := rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Errorf("round %d: second StopPodSandbox: %v", round, err)
		}
		list, err := rc.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list.Containers {
			if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Errorf("round %d: container %s RUNNING in a stopped pod", round, c.Id)
			}
		}
		checkRace(t, d, rc, fmt.Sprintf("round %d stop-vs-create", round))

		// Remove while start, in a fresh pod.
		pod2 := podConfig(t, d, fmt.Sprintf("race2-%d", round))
		pod2ID := runPod(t, d, pod2)
		id := createCtr(t, d, pod2ID, pod2, ctrConfig("b", images.Busybox.Ref, "sleep", "3600"))
		wg.Add(2)
		var rmErr error
		go func() {
			defer wg.Done()
			_, _ = rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
		}()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(round*5) * time.Millisecond)
			_, rmErr = rc.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
		}()
		wg.Wait()
		if rmErr != nil {
			t.Errorf("round %d: RemoveContainer racing a start: %v", round, rmErr)
		}
		if _, err := rc.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id}); err == nil {
			t.Errorf("round %d: container %s still exists after RemoveContainer returned", round, id)
		}
		checkRace(t, d, rc, fmt.Sprintf("round %d remove-vs-start", round))
		removePod(t, d, podID)
		removePod(t, d, pod2ID)
	}
	testutil.AssertNothingLeft(t, d)
}

func checkRace(t *testing.T, d *testutil.Daemon, rc runtimeapi.RuntimeServiceClient, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bad, err := checkConsistency(ctx, d, rc)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for _, b := range bad {
		t.Errorf("%s: %s", what, b)
	}
}
