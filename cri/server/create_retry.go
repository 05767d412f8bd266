package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
)

// kubelet gives up on a RunPodSandbox or CreateContainer after its runtime
// request timeout and asks again with the same config, while berthd goes
// on with the first call. Its second call must get the object the first
// one made rather than AlreadyExists, which kubelet would only retry
// forever; CRI-O does this (reservePodNameOrGetExisting, getResourceOrWait),
// containerd answers the name conflict with an error. The same name with a
// different config is still a conflict.

// createBound bounds a create kubelet stopped waiting for: twice kubelet's
// default runtime request timeout.
const createBound = 4 * time.Minute

// detachCreate returns the context a create runs under: kubelet's deadline
// or a closed connection does not cut it short half way, so what kubelet's
// retry finds is a finished object (or, after a failure, none).
func detachCreate(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), createBound)
}

// reserveOrExisting reserves name for id. When another create holds the
// name, it waits for that create to end (its ID's lock is held across the
// whole create, rollback included) and returns the holder's ID if done
// reports that it finished as the object this call asks for; if the
// holder failed and freed the name meanwhile, it reserves the name after
// all. Otherwise the error wraps ErrAlreadyExists.
func (s *Server) reserveOrExisting(name, id string, done func(holder string) bool) (existing string, err error) {
	holder, err := s.store.Reserve(name, id)
	if err == nil {
		return "", nil
	}
	unlock := s.locks.lock(holder)
	finished := done(holder)
	unlock()
	if finished {
		return holder, nil
	}
	if _, rerr := s.store.Reserve(name, id); rerr == nil {
		return "", nil
	}
	return "", err
}

// sandboxDone reports whether sandbox id is ready and was run with cfg
// under handler.
func (s *Server) sandboxDone(id string, cfg *runtime.PodSandboxConfig, handler string) bool {
	sb, err := s.store.Sandbox(id)
	return err == nil && sb.ID == id && sb.Status.State == store.SandboxReady &&
		sb.RuntimeHandler == handler && proto.Equal(sb.Config, cfg)
}

// containerDone reports whether container id was created in sandbox
// sandboxID from cfg and has not been started since.
func (s *Server) containerDone(id, sandboxID string, cfg *runtime.ContainerConfig) bool {
	c, err := s.store.Container(id)
	return err == nil && c.ID == id && c.SandboxID == sandboxID && c.Status.State == store.ContainerCreated &&
		proto.Equal(withoutImageRefs(c.Config), withoutImageRefs(cfg))
}

// withoutImageRefs returns a copy of cfg without the image IDs that
// CreateContainer records in its image volumes, which the request lacks.
func withoutImageRefs(cfg *runtime.ContainerConfig) *runtime.ContainerConfig {
	out := proto.Clone(cfg).(*runtime.ContainerConfig)
	for _, m := range out.GetMounts() {
		if m.GetImage() != nil {
			m.Image.ImageRef = ""
		}
	}
	return out
}
