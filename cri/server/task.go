package server

import (
	"context"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/task"
	"github.com/berth-runtime/berth/imagesvc"
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

// task returns the task of container id, nil when it has none: it never
// started a shim, or it exited.
func (s *Server) task(id string) task.Task {
	t, ok := s.tasks.Get(id)
	if !ok {
		return nil
	}
	return t
}

// taskHooks are what the server does around a container's end: the OOM
// kill count is read before the runtime deletes the cgroup, and the exit
// is published once recorded.
func (s *Server) taskHooks() task.Hooks {
	return task.Hooks{
		Watching: s.oomBaseline,
		Exiting:  s.recordOOM,
		Exited: func(rec store.Container, _ task.Exit) {
			s.containerEvent(rec.ID, rec.SandboxID, runtime.ContainerEventType_CONTAINER_STOPPED_EVENT)
			// Plugins hear of a container that ended on its own too, as
			// containerd tells them; before Stop's waiter is released.
			s.nriContainerStopped(context.Background(), rec)
		},
	}
}
