package server

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/imagesvc/reference"
)

func containerState(s store.ContainerState) runtime.ContainerState {
	switch s {
	case store.ContainerCreated:
		return runtime.ContainerState_CONTAINER_CREATED
	case store.ContainerRunning:
		return runtime.ContainerState_CONTAINER_RUNNING
	case store.ContainerExited:
		return runtime.ContainerState_CONTAINER_EXITED
	}
	return runtime.ContainerState_CONTAINER_UNKNOWN
}

// statusImageName is the image a container status names. kubelet creates
// containers from the image's ID and shows ContainerStatus's image in the
// pod's status, where users and the node e2e suite expect a name: the tag
// the user asked for (or the container was created from, as crictl does)
// when the image still carries it, else its first tag (what containerd
// reports), else what the container was created from.
func (s *Server) statusImageName(c store.Container) string {
	tags, err := s.images.RepoTags(context.Background(), c.ImageID)
	if err != nil || len(tags) == 0 {
		return c.Image
	}
	for _, name := range []string{c.Config.GetImage().GetUserSpecifiedImage(), c.Image} {
		// kubelet creates from the image ID: no tag to find, and parsing
		// it (or "") costs more than the rest of the status.
		if name == "" || strings.HasPrefix(name, "sha256:") {
			continue
		}
		// Tags are kept normalised: a name that is one needs no parse.
		if slices.Contains(tags, name) {
			return name
		}
		if r, err := reference.Parse(name); err == nil && slices.Contains(tags, r.TagRef()) {
			return r.TagRef()
		}
	}
	return tags[0]
}

func (s *Server) containerStatus(c store.Container) *runtime.ContainerStatus {
	cfg := c.Config
	st := &runtime.ContainerStatus{
		Id:          c.ID,
		Metadata:    &runtime.ContainerMetadata{Name: c.Metadata.Name, Attempt: c.Metadata.Attempt},
		State:       containerState(c.Status.State),
		CreatedAt:   c.CreatedAt,
		StartedAt:   c.Status.StartedAt,
		FinishedAt:  c.Status.FinishedAt,
		ExitCode:    c.Status.ExitCode,
		Image:       &runtime.ImageSpec{Image: s.statusImageName(c), Annotations: cfg.GetImage().GetAnnotations(), UserSpecifiedImage: cfg.GetImage().GetUserSpecifiedImage()},
		ImageRef:    c.ImageRef,
		ImageId:     c.ImageID,
		Reason:      c.Status.Reason,
		Message:     c.Status.Message,
		Labels:      c.Labels,
		Annotations: c.Annotations,
		Mounts:      cfg.GetMounts(),
		LogPath:     c.LogPath,
		User:        s.containerUser(c),
	}
	sig, err := parseSignal(c.StopSignal)
	if err != nil {
		sig = unix.SIGTERM // what stopContainer sends instead
	}
	st.StopSignal = statusStopSignal(sig)
	// Reported once the container has resources, from its config or an update.
	if cfg.GetLinux().GetResources() != nil || !c.Status.Resources.IsZero() {
		st.Resources = &runtime.ContainerResources{Linux: c.Status.Resources.CRI()}
	}
	if c.Status.State != store.ContainerExited {
		st.Reason, st.Message = "", ""
	}
	return st
}

// ContainerStatus reports one container; an unknown ID is NotFound.
func (s *Server) ContainerStatus(ctx context.Context, r *runtime.ContainerStatusRequest) (*runtime.ContainerStatusResponse, error) {
	c, err := s.store.Container(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	if s.creating.has(c.ID) {
		return nil, fmt.Errorf("container %q is being created: %w", c.ID, errdefs.ErrNotFound)
	}
	resp := &runtime.ContainerStatusResponse{Status: s.containerStatus(c)}
	if r.GetVerbose() {
		info, err := json.Marshal(map[string]any{
			"sandboxID":      c.SandboxID,
			"pid":            c.Status.Pid,
			"bundle":         c.Bundle,
			"runtimeHandler": c.RuntimeHandler,
		})
		if err != nil {
			return nil, fmt.Errorf("encode info of container %q: %w", c.ID, err)
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

func (s *Server) listContainers(f *runtime.ContainerFilter) []*runtime.Container {
	all := f.GetId() == "" && f.GetPodSandboxId() == "" && f.GetState() == nil && len(f.GetLabelSelector()) == 0
	s.items.mu.Lock()
	defer s.items.mu.Unlock()
	list := func() []*runtime.Container {
		out := walkItems(&s.items.containers, all, s.store.EachContainer,
			func(c *store.Container) string { return c.ID },
			func(c *store.Container) bool {
				return (f.GetId() == "" || strings.HasPrefix(c.ID, f.GetId())) &&
					(f.GetPodSandboxId() == "" || strings.HasPrefix(c.SandboxID, f.GetPodSandboxId())) &&
					(f.GetState() == nil || f.GetState().GetState() == containerState(c.Status.State)) &&
					matchLabels(f.GetLabelSelector(), c.Labels)
			},
			func(it *runtime.Container, c *store.Container) bool {
				return it.State == containerState(c.Status.State) && it.CreatedAt == c.CreatedAt
			},
			func(c *store.Container) *runtime.Container {
				return &runtime.Container{
					Id:           c.ID,
					PodSandboxId: c.SandboxID,
					Metadata:     &runtime.ContainerMetadata{Name: c.Metadata.Name, Attempt: c.Metadata.Attempt},
					Image:        &runtime.ImageSpec{Image: c.Image},
					ImageRef:     c.ImageRef,
					ImageId:      c.ImageID,
					State:        containerState(c.Status.State),
					CreatedAt:    c.CreatedAt,
					Labels:       c.Labels,
					Annotations:  c.Annotations,
				}
			})
		out = slices.DeleteFunc(out, func(c *runtime.Container) bool { return s.creating.has(c.Id) })
		slices.SortFunc(out, func(a, b *runtime.Container) int { return cmp.Compare(a.CreatedAt, b.CreatedAt) })
		return out
	}
	return s.items.containers.answer(all, func() listKey {
		_, gen := s.store.Generations()
		return listKey{gen, s.creating.version()}
	}, list)
}

// ListContainers lists containers matching the filter.
func (s *Server) ListContainers(ctx context.Context, r *runtime.ListContainersRequest) (*runtime.ListContainersResponse, error) {
	return &runtime.ListContainersResponse{Containers: s.listContainers(r.GetFilter())}, nil
}

// StreamContainers sends the same items as ListContainers in chunks.
func (s *Server) StreamContainers(r *runtime.StreamContainersRequest, stream runtime.RuntimeService_StreamContainersServer) error {
	items := s.listContainers(r.GetFilter())
	return sendChunked(items, func(chunk []*runtime.Container) error {
		return stream.Send(&runtime.StreamContainersResponse{Containers: chunk})
	})
}
