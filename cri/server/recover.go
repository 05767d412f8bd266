package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/berth-runtime/berth/cri/store"
)

// recoverParallel is how many containers Recover reattaches at once.
const recoverParallel = 16

// Recover rebuilds berthd's live state from the store after a start or a
// crash. What it assumes:
//
//  1. The store is the truth about which objects exist. A record is written
//     before anything it names is created, so whatever exists on disk for
//     an ID without a record was left by a crash and is removed.
//  2. A shim outlives berthd. A container whose shim runs and wrote no
//     exit file runs; berthd serves it before its shim is reattached and
//     watched again in the background, and calls that need the shim wait
//     for that. An exit that came meanwhile is read from the exit file the
//     shim wrote before it would have reported it.
//  3. A container whose shim is gone ended: its exit comes from the exit
//     file the shim writes before it reports, or, if the shim died first,
//     `berth-shim delete` kills what is left and the container is recorded
//     as exited with an error.
//  4. A record caught half way through removal is removed again; removal
//     steps are idempotent.
//  5. Network attachments of sandboxes without a record are released (CNI
//     GC, which may end after berthd serves: network setups and teardowns
//     wait for it); a sandbox whose teardown failed is torn down again by
//     the next StopPodSandbox or RemovePodSandbox from kubelet.
//  6. A sandbox whose namespaces are gone cannot run containers: it is
//     reported NOTREADY so kubelet recreates it.
//
// Recovery never stops at one bad record: it logs it and goes on.
func (s *Server) Recover(ctx context.Context) error {
	// Containers are independent; most cost a look at their shim's pid and
	// exit files here, but one caught removing or whose shim is gone costs
	// a cleanup by the runtime: a few at a time keep those from queueing.
	start := time.Now()
	// Network attachments of sandboxes the store does not know were left
	// by a crash inside RunPodSandbox or RemovePodSandbox. The GC runs the
	// CNI plugins: hundreds of milliseconds on a loaded node, which
	// listing and inspecting pods does not need. It goes on after berthd
	// serves; network setups and teardowns wait for it, so the keep list
	// taken now, before anything can create or remove a sandbox, holds
	// until it ends.
	var keep []string
	s.store.EachSandbox(func(sb *store.Sandbox) { keep = append(keep, sb.ID) })
	gcDone := make(chan struct{})
	s.networkGC = gcDone
	go func() {
		defer close(gcDone)
		gcStart := time.Now()
		if err := s.network.GC(ctx, keep); err != nil {
			s.log.Warn("network garbage collection", "error", err)
		}
		s.log.Info("network garbage collected", "sandboxes_kept", len(keep), "took", time.Since(gcStart))
	}()
	ctrs := s.store.Containers()
	sem := make(chan struct{}, recoverParallel)
	var wg sync.WaitGroup
	for _, c := range ctrs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := s.recoverContainer(ctx, c); err != nil {
				s.log.Error("recover container", "container_id", c.ID, "error", err)
			}
		}()
	}
	wg.Wait()
	reattached := time.Since(start)
	sbs := s.store.Sandboxes()
	for _, sb := range sbs {
		if err := s.recoverSandbox(ctx, sb); err != nil {
			s.log.Error("recover sandbox", "sandbox_id", sb.ID, "error", err)
		}
	}
	s.removeOrphanBundles(ctx)
	// Where a restart's seconds go, for operators of large nodes.
	s.log.Info("recovered", "containers", len(ctrs), "sandboxes", len(sbs),
		"containers_took", reattached, "took", time.Since(start))
	// In the background once berthd serves: calls that need a shim wait
	// for it, and the CPU goes to serving first.
	go func() {
		s.tasks.Reattach()
		s.log.Info("shims reattached", "took", time.Since(start))
	}()
	return nil
}

func (s *Server) recoverContainer(ctx context.Context, c store.Container) error {
	if c.Status.Removing {
		return s.removeContainer(ctx, c)
	}
	return s.tasks.Recover(ctx, c)
}

func (s *Server) recoverSandbox(ctx context.Context, sb store.Sandbox) error {
	if sb.Status.State != store.SandboxReady {
		if sb.Status.Pod.HostnamePath == "" {
			// Killed inside sandboxes.Create: what it made (pins, shm,
			// infra) was never recorded, so a NOTREADY pod would hold it
			// unseen. Remove finds it by ID and is idempotent.
			s.log.Warn("releasing a sandbox whose creation was interrupted", "sandbox_id", sb.ID)
			return s.sandboxes.Remove(ctx, controllerPod(sb))
		}
		return nil
	}
	for _, pin := range []string{sb.Status.Pod.NetNS, sb.Status.Pod.IPCNS, sb.Status.Pod.UTSNS} {
		if pin == "" {
			continue
		}
		if _, err := os.Stat(pin); err != nil {
			return s.markNotReady(sb.ID, fmt.Sprintf("namespace pin %s is gone", pin))
		}
	}
	if sb.Status.Pod.InfraPID != 0 && !s.sandboxes.InfraAlive(controllerPod(sb)) {
		return s.markNotReady(sb.ID, "infra process is gone")
	}
	return nil
}

func (s *Server) markNotReady(id, why string) error {
	s.log.Warn("sandbox not ready after restart", "sandbox_id", id, "why", why)
	_, err := s.store.UpdateSandboxStatus(id, func(st store.SandboxStatus) (store.SandboxStatus, error) {
		st.State = store.SandboxNotReady
		return st, nil
	})
	return err
}

// removeOrphanBundles removes container state dirs no record names: a
// crash between creating them and recording them, which cannot happen with
// record-first creation, or records lost with a metadata file.
func (s *Server) removeOrphanBundles(ctx context.Context) {
	entries, err := os.ReadDir(s.containersDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		if _, err := s.store.Container(e.Name()); err == nil || len(e.Name()) != 64 {
			continue
		}
		rec := store.Container{ContainerMeta: store.ContainerMeta{
			ID: e.Name(), Bundle: filepath.Join(s.containersDir(), e.Name()),
			RuntimeHandler: s.cfg.Runtime.DefaultHandler,
		}}
		rec.Rootfs = filepath.Join(rec.Bundle, "rootfs")
		s.log.Warn("removing state of unknown container", "container_id", rec.ID)
		s.tasks.Cleanup(ctx, rec)
		if err := s.images.RemoveRootfs(ctx, rec.ID, rec.Rootfs); err != nil {
			s.log.Error("remove rootfs of unknown container", "container_id", rec.ID, "error", err)
			continue
		}
		_ = os.RemoveAll(rec.Bundle)
	}
}
