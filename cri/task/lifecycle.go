package task

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/shim/client"
)

// CreateOpts is what the runtime's create needs beyond the record.
type CreateOpts struct {
	Stdin, StdinOnce, Terminal bool
	// RestoreFrom is the CRIU image dir of a container restored from a
	// checkpoint, CriuPath the CRIU the shim must use for it.
	RestoreFrom, CriuPath string
}

// Pending is a shim spawned for a container under creation.
type Pending interface {
	// Create has the shim create the container through the OCI runtime.
	Create(ctx context.Context, o CreateOpts) (pid int, err error)
	// Discard stops a shim that holds no container; after a successful
	// Create it does nothing.
	Discard(ctx context.Context) error
	// Destroy undoes a successful Create: the runtime deletes the
	// container and the shim exits.
	Destroy(ctx context.Context) error
	// Watch hands a created container over to the manager, which watches
	// it until it exits.
	Watch()
	// Shim is the shim's process once Create succeeded, for the record
	// (store.ContainerStatus.ShimPid); zero when it could not be read.
	Shim() ShimProcess
}

type pending struct {
	m    *Manager
	rec  store.Container
	done chan struct{}
	cli  *client.Client // set once done is closed
	err  error          // set once done is closed
	// task and shim are set by a successful Create.
	task *shimTask
	shim ShimProcess
}

// Spawn starts rec's shim in the background: its spawn, a fork/exec of a
// Go binary, is the largest cost of a create after the runtime's own, and
// needs nothing but the bundle dir.
func (m *Manager) Spawn(ctx context.Context, rec store.Container) Pending {
	p := &pending{m: m, rec: rec, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.cli, p.err = client.Start(ctx, client.StartOpts{
			ID: rec.ID, ShimBinary: m.shimPath, Socket: m.socket(rec.ID), StateDir: rec.Bundle,
		})
		if p.err != nil {
			if err := m.cleanup(context.WithoutCancel(ctx), rec); err != nil {
				m.log.Warn("clean up after shim", "container_id", rec.ID, "error", err)
			}
			p.err = fmt.Errorf("start shim of container %q: %w", rec.ID, p.err)
		}
	}()
	return p
}

func (p *pending) Create(ctx context.Context, o CreateOpts) (int, error) {
	bin, err := p.m.runtimeBinary(p.rec.RuntimeHandler)
	if err != nil {
		return 0, err
	}
	<-p.done
	if p.err != nil {
		return 0, p.err
	}
	pid, err := p.cli.Create(ctx, client.CreateOpts{
		Bundle:        p.rec.Bundle,
		RuntimeBinary: bin,
		RuntimeRoot:   p.m.cfg.HandlerRoot(p.rec.RuntimeHandler),
		LogPath:       p.rec.LogPath,
		Stdin:         o.Stdin,
		StdinOnce:     o.StdinOnce,
		Terminal:      o.Terminal,
		RestoreFrom:   o.RestoreFrom,
		CriuPath:      o.CriuPath,
	})
	if err != nil {
		// The request's context may be what ended the create; the shim
		// must go anyway.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		// A runtime create that failed half way may have left state the
		// shim does not know of: the second release finds it on disk.
		if rerr := errors.Join(p.m.release(rctx, p.rec, p.cli), p.m.Release(rctx, p.rec)); rerr != nil {
			p.m.log.Warn("release shim after failed create", "container_id", p.rec.ID, "error", rerr)
		}
		p.cli = nil
		return 0, fmt.Errorf("create container %q: %w", p.rec.ID, err)
	}
	p.task = connectedTask(p.rec.ID, p.cli)
	// The shim wrote it before it answered; a restart reads it from the
	// record instead of from two files per container.
	p.shim, _ = client.ReadShimProcess(p.rec.Bundle)
	return pid, nil
}

func (p *pending) Shim() ShimProcess { return p.shim }

func (p *pending) Discard(ctx context.Context) error {
	<-p.done
	if p.err != nil || p.cli == nil || p.task != nil {
		return nil
	}
	return p.m.release(ctx, p.rec, p.cli)
}

func (p *pending) Destroy(ctx context.Context) error {
	if p.task == nil {
		return nil
	}
	return p.m.release(ctx, p.rec, p.task.cli)
}

func (p *pending) Watch() {
	if p.task != nil {
		p.m.watch(p.rec, p.task)
	}
}

// watch holds a Wait call on the shim for the life of the container: the
// shim answers when the init process is gone, so exits arrive without
// polling. The shim is released before the exit is recorded: a daemon
// killed in between finds a running record whose shim is gone and reads the
// exit file the shim left, so no shim outlives its container's record. An
// exited container costs no process.
func (m *Manager) watch(rec store.Container, t *shimTask) {
	m.mu.Lock()
	m.tasks[rec.ID] = t
	m.mu.Unlock()
	// A container not started yet is watched before it runs. One found
	// running after a restart is watched by the Reattach worker that
	// connected it, after its calls were let through: the hook reads the
	// container's spec, and 400 of them at once, in line before serving
	// or in as many goroutines after, held up a 250-pod restart's first
	// calls (full-node bench).
	var watched uint64
	if m.hooks.Watching != nil {
		watched = m.hooks.Watching(rec)
	}
	go func() {
		exit, err := t.cli.Wait(context.Background())
		m.finish(rec, t, exit, err, watched)
	}()
}

// finish records how a container ended once its shim answered Wait (or
// was lost, waitErr != nil) and releases the task.
func (m *Manager) finish(rec store.Container, t *shimTask, exit Exit, waitErr error, watched uint64) {
	log := m.log.With("container_id", rec.ID, "sandbox_id", rec.SandboxID)
	if m.hooks.Exiting != nil {
		m.hooks.Exiting(rec, watched)
	}
	if waitErr != nil {
		log.Warn("lost the shim, reading the exit it left", "error", waitErr)
		exit = m.shimLost(rec)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := m.release(ctx, rec, t.cli); err != nil {
			log.Error("release shim", "error", err)
		}
		cancel()
	}
	if err := m.recordExit(rec.ID, exit); err != nil {
		log.Error("record exit", "error", err)
	}
	if m.hooks.Exited != nil {
		m.hooks.Exited(rec, exit)
	}
	log.Info("container exited", "exit_code", exit.Status)
	close(t.done)
	m.mu.Lock()
	if m.tasks[rec.ID] == t {
		delete(m.tasks, rec.ID)
	}
	m.mu.Unlock()
}

// shimLost finds out how a container ended when its shim is gone: from the
// exit file the shim writes before it reports, or, when the shim died
// first, by having `berth-shim delete` kill what is left and record it.
func (m *Manager) shimLost(rec store.Container) Exit {
	if exit, err := client.ReadExit(rec.Bundle); err == nil {
		return exit
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.cleanup(ctx, rec); err != nil {
		m.log.Warn("clean up after shim", "container_id", rec.ID, "error", err)
	}
	if exit, err := client.ReadExit(rec.Bundle); err == nil {
		return exit
	}
	return Exit{Status: 255, ExitedAt: time.Now()}
}

func (m *Manager) recordExit(id string, exit Exit) error {
	_, err := m.store.UpdateContainerStatus(id, func(st store.ContainerStatus) (store.ContainerStatus, error) {
		if st.State == store.ContainerExited {
			return st, nil
		}
		st.State = store.ContainerExited
		st.FinishedAt = exit.ExitedAt.UnixNano()
		st.ExitCode = exit.Status
		st.Pid, st.ShimPid, st.ShimStart = 0, 0, 0
		if st.Reason == "" {
			st.Reason = "Completed"
			if exit.Status != 0 {
				st.Reason = "Error"
			}
		}
		return st, nil
	})
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// shimGoneWait bounds the wait for a shim to leave after Shutdown.
const shimGoneWait = 2 * time.Second

// release is the one way berthd ends a shim and what it holds: the init
// process is killed if it runs, the runtime deletes the container, the
// shim shuts down and is waited for. When that fails, or berthd has no
// connection (cli nil) and a shim or runtime state is left on disk,
// `berth-shim delete` does the same work without the shim; its failure,
// or runtime state that survives it, fails the release.
func (m *Manager) release(ctx context.Context, rec store.Container, cli *client.Client) error {
	var errs []error
	if cli != nil {
		if st, err := cli.State(ctx); err == nil && st.Status != client.StatusStopped {
			// NotFound: the shim has deleted the container, nothing to kill.
			if err := cli.Kill(ctx, 9, true); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("kill: %w", err))
			}
		}
		if _, err := cli.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete: %w", err))
		}
		if err := cli.Shutdown(ctx); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		} else {
			// The shim leaves as soon as its connection closes; a shim
			// still alive would make RemoveContainer clean up after it.
			gctx, cancel := context.WithTimeout(ctx, shimGoneWait)
			if err := cli.WaitGone(gctx); err != nil {
				errs = append(errs, err)
			}
			cancel()
		}
		_ = cli.Close()
	}
	switch {
	case cli != nil && len(errs) == 0:
		// The shim did it all and is gone.
		return nil
	case cli == nil && !client.ShimAlive(rec.Bundle) && !m.runtimeKnows(rec):
		// Nothing holds the container.
		return nil
	}
	if err := m.cleanup(ctx, rec); err != nil {
		errs = append(errs, err)
	} else if m.runtimeKnows(rec) {
		errs = append(errs, fmt.Errorf("runtime still holds container %q after delete: %w", rec.ID, errdefs.ErrFailedPrecondition))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release container %q from its shim and runtime: %w", rec.ID, err)
	}
	return nil
}

// cleanup runs `berth-shim delete` for rec: it kills a shim that is left,
// has the runtime force-delete the container and records an exit if the
// shim wrote none. Running it again succeeds.
func (m *Manager) cleanup(ctx context.Context, rec store.Container) error {
	bin, berr := m.runtimeBinary(rec.RuntimeHandler)
	err := client.Cleanup(ctx, client.CleanupOpts{
		ID: rec.ID, ShimBinary: m.shimPath, Socket: m.socket(rec.ID), StateDir: rec.Bundle,
		RuntimeBinary: bin, RuntimeRoot: m.cfg.HandlerRoot(rec.RuntimeHandler),
	})
	return errors.Join(berr, err)
}

// runtimeKnows reports whether the OCI runtime still keeps state for c:
// runc and crun keep a container's state in <root>/<id>.
func (m *Manager) runtimeKnows(c store.Container) bool {
	_, err := os.Stat(filepath.Join(m.cfg.HandlerRoot(c.RuntimeHandler), c.ID))
	return !errors.Is(err, os.ErrNotExist)
}

// Release makes sure neither a shim nor the runtime holds c, which has no
// task, before its files go. A runtime delete that failed when the
// container exited (only logged then) is retried here, and its failure
// fails the release, so the caller can retry instead of removing the
// record over a runtime state and cgroups no one would ever delete.
func (m *Manager) Release(ctx context.Context, c store.Container) error {
	return m.release(ctx, c, nil)
}

// Cleanup releases what is left of a container berthd has no record of,
// logging a failure.
func (m *Manager) Cleanup(ctx context.Context, c store.Container) {
	if err := m.cleanup(ctx, c); err != nil {
		m.log.Warn("clean up after shim", "container_id", c.ID, "error", err)
	}
}

// Recover settles the state of a container that was not removing after a
// daemon restart (DESIGN: the shim outlives berthd; its exit file tells
// the rest). A container that ended while berthd was down is recorded
// exited before Recover returns; one whose shim still runs and wrote no
// exit runs as recorded, and gets a task at once whose calls wait until
// Reattach connects its shim. On a full node those connections were most
// of a restart: hundreds of dials and first calls to shims that must each
// be scheduled (full-node bench, N=250), while the answer to "what runs"
// is already on disk.
func (m *Manager) Recover(ctx context.Context, c store.Container) error {
	if c.Status.State == store.ContainerExited {
		if client.ShimAlive(c.Bundle) {
			// Left by an older berthd that recorded exits first.
			m.Cleanup(ctx, c)
		}
		return nil
	}
	if _, err := client.ReadExit(c.Bundle); err != nil && c.Status.State == store.ContainerRunning && shimAlive(c) {
		t := &shimTask{id: c.ID, ready: make(chan struct{}), done: make(chan struct{})}
		t.attach = func() { m.reattach(c, t) }
		m.mu.Lock()
		m.tasks[c.ID] = t
		m.unattached = append(m.unattached, unattached{c, t})
		m.mu.Unlock()
		return nil
	}
	return m.recoverNow(ctx, c)
}

// shimAlive reports whether c's shim runs, from the record when it names
// the shim (one read of /proc), else from the shim's pid files.
func shimAlive(c store.Container) bool {
	if c.Status.ShimPid != 0 {
		return ShimProcess{Pid: c.Status.ShimPid, Start: c.Status.ShimStart}.Alive()
	}
	return client.ShimAlive(c.Bundle)
}

// unattached is a running container Recover found, waiting for Reattach.
type unattached struct {
	c store.Container
	t *shimTask
}

// reattachParallel bounds the shims Reattach connects to at once. Each
// connection wakes a shim; a few at a time leave the CPU of a loaded node
// to the calls berthd serves meanwhile, and a call that needs a shim not
// reached yet connects it itself.
const reattachParallel = 4

// Reattach connects the shims of the running containers Recover found
// and watches them, and returns when all are connected or found lost. It
// runs once berthd serves: before, it took the CPU a loaded node's restart
// needs to settle every container's state (full-node bench).
func (m *Manager) Reattach() {
	m.mu.Lock()
	todo := m.unattached
	m.unattached = nil
	m.mu.Unlock()
	sem := make(chan struct{}, reattachParallel)
	var wg sync.WaitGroup
	for _, u := range todo {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			u.t.reattach()
		})
	}
	wg.Wait()
}

// reattach connects t, a task Recover made for a running container, to
// its shim and watches it. A shim that no longer answers is handled as
// one lost at any other time.
func (m *Manager) reattach(c store.Container, t *shimTask) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cli, err := client.Connect(ctx, m.socket(c.ID), c.Bundle)
	if err != nil {
		// Calls waiting on t fail as Unavailable, which callers read as
		// "exiting" and wait for done.
		close(t.ready)
		m.finish(c, t, Exit{}, err, 0)
		return
	}
	t.cli = cli
	close(t.ready)
	// An exit that came after Recover's look at the exit file is
	// reported by Wait.
	m.watch(c, t)
}

// recoverNow settles a container whose shim is gone, that exited while
// berthd was down, or that was caught inside CreateContainer, reattaching
// its shim if one answers.
func (m *Manager) recoverNow(ctx context.Context, c store.Container) error {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cli, err := client.Connect(dctx, m.socket(c.ID), c.Bundle)
	if err != nil {
		exit := m.shimLost(c)
		if c.Status.Pid == 0 && c.Status.State == store.ContainerCreated {
			// The daemon died inside CreateContainer: nothing ran.
			exit = Exit{Status: 255, ExitedAt: time.Now()}
			if _, err := m.store.UpdateContainerStatus(c.ID, func(st store.ContainerStatus) (store.ContainerStatus, error) {
				st.Reason, st.Message = "Error", "berthd restarted while creating the container"
				return st, nil
			}); err != nil {
				return err
			}
		}
		return m.recordExit(c.ID, exit)
	}
	t := connectedTask(c.ID, cli)
	// The shim writes the exit file before it reports the exit, so the
	// file tells what a State call would without waking the shim: on a
	// loaded node each round trip waits for the shim to be scheduled, and
	// a restart with 400 containers spent most of its time there
	// (full-node bench). A container that exits after this check is
	// reported by Wait, as at any other time.
	if exit, err := client.ReadExit(c.Bundle); err == nil {
		// It ended while berthd was down: record that before serving, so
		// no client sees it RUNNING after the restart.
		m.mu.Lock()
		m.tasks[c.ID] = t
		m.mu.Unlock()
		m.finish(c, t, exit, nil, 0)
		return nil
	}
	m.watch(c, t)
	// Debug: the log's lock serialised a 250-pod restart's reattachments
	// (a second of waiting in total, execution trace); Server.Recover
	// logs the count.
	m.log.Debug("reattached container", "container_id", c.ID)
	return nil
}
