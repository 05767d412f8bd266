package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/imagesvc"
	"github.com/berth-runtime/berth/shim/client"
)

type imageConfig = ocispec.ImageConfig

// imageRef is what ContainerStatus reports as image_ref: the digest the
// image was pulled by when there is one, as other runtimes report it.
func imageRef(img imagesvc.Image) string {
	if len(img.RepoDigests) > 0 {
		return img.RepoDigests[0]
	}
	return img.ID
}

// task is berthd's live link to the shim of a container that has not
// finished yet. done is closed once the exit is persisted.
type task struct {
	client *client.Client
	done   chan struct{}
}

func (s *Server) task(id string) *task {
	s.tasksMu.Lock()
	defer s.tasksMu.Unlock()
	return s.tasks[id]
}

// watch holds a Wait call on the shim for the life of the container: the
// shim answers when the init process is gone, so exits arrive without
// polling. The shim is released before the exit is recorded: a daemon
// killed in between finds a running record whose shim is gone and reads the
// exit file the shim left, so no shim outlives its container's record. An
// exited container costs no process.
func (s *Server) watch(rec store.Container, t *task) {
	s.tasksMu.Lock()
	s.tasks[rec.ID] = t
	s.tasksMu.Unlock()
	oomBase := s.oomBaseline(rec)
	go func() {
		exit, err := t.client.Wait(context.Background())
		s.finish(rec, t, exit, err, oomBase)
	}()
}

// finish records how a container ended once its shim answered Wait (or
// was lost, waitErr != nil) and releases the task.
func (s *Server) finish(rec store.Container, t *task, exit client.Exit, waitErr error, oomBase uint64) {
	log := s.log.With("container_id", rec.ID, "sandbox_id", rec.SandboxID)
	// Before the runtime deletes the cgroup and its counter with it.
	s.recordOOM(rec, oomBase)
	if waitErr != nil {
		log.Warn("lost the shim, reading the exit it left", "error", waitErr)
		exit = s.shimLost(rec)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := s.destroyTask(ctx, rec, t); err != nil {
			log.Error("release shim", "error", err)
		}
		cancel()
	}
	if err := s.recordExit(rec.ID, exit); err != nil {
		log.Error("record exit", "error", err)
	}
	s.containerEvent(rec.ID, rec.SandboxID, runtime.ContainerEventType_CONTAINER_STOPPED_EVENT)
	log.Info("container exited", "exit_code", exit.Status)
	close(t.done)
	s.tasksMu.Lock()
	if s.tasks[rec.ID] == t {
		delete(s.tasks, rec.ID)
	}
	s.tasksMu.Unlock()
}

// shimLost finds out how a container ended when its shim is gone: from the
// exit file the shim writes before it reports, or, when the shim died
// first, by having `berth-shim delete` kill what is left and record it.
func (s *Server) shimLost(rec store.Container) client.Exit {
	if exit, err := client.ReadExit(rec.Bundle); err == nil {
		return exit
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.cleanupShim(ctx, rec)
	if exit, err := client.ReadExit(rec.Bundle); err == nil {
		return exit
	}
	return client.Exit{Status: 255, ExitedAt: time.Now()}
}

func (s *Server) cleanupShim(ctx context.Context, rec store.Container) {
	bin, _ := s.runtimeBinary(rec.RuntimeHandler)
	err := client.Cleanup(ctx, client.CleanupOpts{
		ID: rec.ID, ShimBinary: s.shimPath, Socket: s.shimSocket(rec.ID), StateDir: rec.Bundle,
		RuntimeBinary: bin, RuntimeRoot: s.cfg.HandlerRoot(rec.RuntimeHandler),
	})
	if err != nil {
		s.log.Warn("clean up after shim", "container_id", rec.ID, "error", err)
	}
}

func (s *Server) recordExit(id string, exit client.Exit) error {
	_, err := s.store.UpdateContainer(id, func(c *store.Container) error {
		if c.Status.State == store.ContainerExited {
			return nil
		}
		c.Status.State = store.ContainerExited
		c.Status.FinishedAt = exit.ExitedAt.UnixNano()
		c.Status.ExitCode = exit.Status
		c.Status.Pid = 0
		if c.Status.Reason == "" {
			c.Status.Reason = "Completed"
			if exit.Status != 0 {
				c.Status.Reason = "Error"
			}
		}
		return nil
	})
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// destroyTask has the runtime delete the container and the shim exit.
func (s *Server) destroyTask(ctx context.Context, rec store.Container, t *task) error {
	var errs []error
	if st, err := t.client.State(ctx); err == nil && st.Status != "stopped" {
		if err := t.client.Kill(ctx, 9, true); err != nil {
			errs = append(errs, fmt.Errorf("kill: %w", err))
		}
	}
	if _, err := t.client.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete: %w", err))
	}
	if err := t.client.Shutdown(ctx); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("shutdown: %w", err))
	} else {
		// The shim leaves as soon as its connection closes; a shim still
		// alive would make RemoveContainer clean up after it, an exec more.
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := t.client.WaitGone(gctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	_ = t.client.Close()
	if len(errs) > 0 {
		// The shim may be wedged; the delete subcommand does the same work
		// without it.
		s.cleanupShim(ctx, rec)
	}
	return errors.Join(errs...)
}
