package server

import (
	"context"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/stats"
	"github.com/berth-runtime/berth/cri/store"
)

// The stats and metrics RPCs pick the records a request names and filter
// them; cri/stats samples them.

// containerUser is the identity the container's process runs as
// (ContainerStatus.user), nil when the bundle is gone.
func (s *Server) containerUser(rec store.Container) *runtime.ContainerUser {
	return s.stats.User(rec)
}

func matchContainerStats(f *runtime.ContainerStatsFilter, c store.Container) bool {
	if f == nil {
		return true
	}
	if f.GetId() != "" && f.GetId() != c.ID {
		return false
	}
	if f.GetPodSandboxId() != "" && f.GetPodSandboxId() != c.SandboxID {
		return false
	}
	return matchLabels(f.GetLabelSelector(), c.Labels)
}

// ContainerStats reports one container's usage; an unknown ID is NotFound.
func (s *Server) ContainerStats(ctx context.Context, r *runtime.ContainerStatsRequest) (*runtime.ContainerStatsResponse, error) {
	c, err := s.store.Container(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	st, _ := s.stats.Container(ctx, c)
	return &runtime.ContainerStatsResponse{Stats: st}, nil
}

func (s *Server) listContainerStats(ctx context.Context, f *runtime.ContainerStatsFilter) []*runtime.ContainerStats {
	all := s.store.Containers()
	keep := make(map[string]bool, 2*len(all))
	var out []*runtime.ContainerStats
	for _, c := range all {
		keep[c.ID] = true
		if !matchContainerStats(f, c) {
			continue
		}
		st, _ := s.stats.Container(ctx, c)
		out = append(out, st)
	}
	if f == nil || (f.GetId() == "" && f.GetPodSandboxId() == "") {
		for _, sb := range s.store.Sandboxes() {
			keep[stats.PodKeyPrefix+sb.ID] = true
		}
		s.stats.Forget(keep)
	}
	return out
}

// ListContainerStats reports the usage of every matching container.
func (s *Server) ListContainerStats(ctx context.Context, r *runtime.ListContainerStatsRequest) (*runtime.ListContainerStatsResponse, error) {
	return &runtime.ListContainerStatsResponse{Stats: s.listContainerStats(ctx, r.GetFilter())}, nil
}

// StreamContainerStats sends the same items as ListContainerStats in chunks.
func (s *Server) StreamContainerStats(r *runtime.StreamContainerStatsRequest, stream runtime.RuntimeService_StreamContainerStatsServer) error {
	items := s.listContainerStats(stream.Context(), r.GetFilter())
	return sendChunked(items, func(chunk []*runtime.ContainerStats) error {
		return stream.Send(&runtime.StreamContainerStatsResponse{ContainerStats: chunk})
	})
}

// podStats samples one pod and its containers.
func (s *Server) podStats(ctx context.Context, sb store.Sandbox) *runtime.PodSandboxStats {
	return &runtime.PodSandboxStats{
		Attributes: &runtime.PodSandboxAttributes{
			Id: sb.ID, Metadata: podMetadata(sb), Labels: sb.Labels, Annotations: sb.Annotations,
		},
		Linux: s.stats.Pod(ctx, sb, s.store.ContainersOf(sb.ID)),
	}
}

// PodSandboxStats reports one pod's usage; an unknown ID is NotFound.
func (s *Server) PodSandboxStats(ctx context.Context, r *runtime.PodSandboxStatsRequest) (*runtime.PodSandboxStatsResponse, error) {
	sb, err := s.store.Sandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	return &runtime.PodSandboxStatsResponse{Stats: s.podStats(ctx, sb)}, nil
}

func (s *Server) listPodStats(ctx context.Context, f *runtime.PodSandboxStatsFilter) []*runtime.PodSandboxStats {
	var out []*runtime.PodSandboxStats
	for _, sb := range s.store.Sandboxes() {
		if f.GetId() != "" && f.GetId() != sb.ID {
			continue
		}
		if !matchLabels(f.GetLabelSelector(), sb.Labels) {
			continue
		}
		out = append(out, s.podStats(ctx, sb))
	}
	return out
}

// ListPodSandboxStats reports the usage of every matching pod.
func (s *Server) ListPodSandboxStats(ctx context.Context, r *runtime.ListPodSandboxStatsRequest) (*runtime.ListPodSandboxStatsResponse, error) {
	return &runtime.ListPodSandboxStatsResponse{Stats: s.listPodStats(ctx, r.GetFilter())}, nil
}

// StreamPodSandboxStats sends the same items as ListPodSandboxStats in chunks.
func (s *Server) StreamPodSandboxStats(r *runtime.StreamPodSandboxStatsRequest, stream runtime.RuntimeService_StreamPodSandboxStatsServer) error {
	items := s.listPodStats(stream.Context(), r.GetFilter())
	return sendChunked(items, func(chunk []*runtime.PodSandboxStats) error {
		return stream.Send(&runtime.StreamPodSandboxStatsResponse{PodSandboxStats: chunk})
	})
}

// The CRI metrics RPCs serve kubelet's CRI-only stats mode (the
// PodAndContainerStatsFromCRI feature): the cadvisor metrics kubelet would
// otherwise scrape.

// ListMetricDescriptors describes every metric ListPodSandboxMetrics sends.
func (s *Server) ListMetricDescriptors(ctx context.Context, r *runtime.ListMetricDescriptorsRequest) (*runtime.ListMetricDescriptorsResponse, error) {
	return &runtime.ListMetricDescriptorsResponse{Descriptors: stats.Descriptors()}, nil
}

// ListPodSandboxMetrics samples every ready pod and its running containers.
func (s *Server) ListPodSandboxMetrics(ctx context.Context, r *runtime.ListPodSandboxMetricsRequest) (*runtime.ListPodSandboxMetricsResponse, error) {
	return &runtime.ListPodSandboxMetricsResponse{PodMetrics: s.podSandboxMetrics(ctx)}, nil
}

// StreamPodSandboxMetrics sends one sample of every pod, like the List
// call; kubelet polls either.
func (s *Server) StreamPodSandboxMetrics(r *runtime.StreamPodSandboxMetricsRequest, stream runtime.RuntimeService_StreamPodSandboxMetricsServer) error {
	return stream.Send(&runtime.StreamPodSandboxMetricsResponse{PodSandboxMetrics: s.podSandboxMetrics(stream.Context())})
}

func (s *Server) podSandboxMetrics(ctx context.Context) []*runtime.PodSandboxMetrics {
	var out []*runtime.PodSandboxMetrics
	fs := s.stats.RootFs()
	for _, sb := range s.store.Sandboxes() {
		if sb.Status.State != store.SandboxReady {
			continue
		}
		out = append(out, s.stats.PodMetrics(ctx, sb, s.store.ContainersOf(sb.ID), fs))
	}
	return out
}
