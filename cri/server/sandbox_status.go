package server

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
)

func podState(s store.SandboxState) runtime.PodSandboxState {
	if s == store.SandboxReady {
		return runtime.PodSandboxState_SANDBOX_READY
	}
	return runtime.PodSandboxState_SANDBOX_NOTREADY
}

func podMetadata(sb store.Sandbox) *runtime.PodSandboxMetadata {
	return &runtime.PodSandboxMetadata{
		Name: sb.Metadata.Name, Uid: sb.Metadata.UID,
		Namespace: sb.Metadata.Namespace, Attempt: sb.Metadata.Attempt,
	}
}

// PodSandboxStatus reports one sandbox; an unknown ID is NotFound.
func (s *Server) PodSandboxStatus(ctx context.Context, r *runtime.PodSandboxStatusRequest) (*runtime.PodSandboxStatusResponse, error) {
	sb, err := s.store.Sandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if s.creating.has(sb.ID) {
		return nil, fmt.Errorf("sandbox %q is being created: %w", sb.ID, errdefs.ErrNotFound)
	}
	st := s.podStatus(sb)
	st.Linux = &runtime.LinuxPodSandboxStatus{Namespaces: &runtime.Namespace{
		Options: namespaceOptions(sb.Config),
	}}
	resp := &runtime.PodSandboxStatusResponse{Status: st}
	if r.GetVerbose() {
		info, err := json.Marshal(map[string]any{
			"pod":          sb.Status.Pod,
			"cgroupParent": sb.CgroupParent,
			"infraAlive":   s.sandboxes.InfraAlive(controllerPod(sb)),
			"config":       sb.CurrentConfig(),
		})
		if err != nil {
			return nil, fmt.Errorf("encode info of sandbox %q: %w", sb.ID, err)
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	for _, c := range s.store.ContainersOf(sb.ID) {
		resp.ContainersStatuses = append(resp.ContainersStatuses, s.containerStatus(c))
	}
	return resp, nil
}

func matchLabels(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (s *Server) listSandboxes(f *runtime.PodSandboxFilter) []*runtime.PodSandbox {
	all := f.GetId() == "" && f.GetState() == nil && len(f.GetLabelSelector()) == 0
	s.items.mu.Lock()
	defer s.items.mu.Unlock()
	list := func() []*runtime.PodSandbox {
		out := walkItems(&s.items.sandboxes, all, s.store.EachSandbox,
			func(sb *store.Sandbox) string { return sb.ID },
			func(sb *store.Sandbox) bool {
				return (f.GetId() == "" || strings.HasPrefix(sb.ID, f.GetId())) &&
					(f.GetState() == nil || f.GetState().GetState() == podState(sb.Status.State)) &&
					matchLabels(f.GetLabelSelector(), sb.Labels)
			},
			func(it *runtime.PodSandbox, sb *store.Sandbox) bool {
				return it.State == podState(sb.Status.State) && it.CreatedAt == sb.CreatedAt
			},
			func(sb *store.Sandbox) *runtime.PodSandbox {
				return &runtime.PodSandbox{
					Id:             sb.ID,
					Metadata:       podMetadata(*sb),
					State:          podState(sb.Status.State),
					CreatedAt:      sb.CreatedAt,
					Labels:         sb.Labels,
					Annotations:    sb.Annotations,
					RuntimeHandler: sb.RuntimeHandler,
				}
			})
		out = slices.DeleteFunc(out, func(p *runtime.PodSandbox) bool { return s.creating.has(p.Id) })
		slices.SortFunc(out, func(a, b *runtime.PodSandbox) int { return cmp.Compare(a.CreatedAt, b.CreatedAt) })
		return out
	}
	return s.items.sandboxes.answer(all, func() listKey {
		gen, _ := s.store.Generations()
		return listKey{gen, s.creating.version()}
	}, list)
}

// ListPodSandbox lists sandboxes matching the filter.
func (s *Server) ListPodSandbox(ctx context.Context, r *runtime.ListPodSandboxRequest) (*runtime.ListPodSandboxResponse, error) {
	return &runtime.ListPodSandboxResponse{Items: s.listSandboxes(r.GetFilter())}, nil
}

// streamChunk bounds how many items go into one streamed response, far
// below gRPC's message size limit.
const streamChunk = 500

// sendChunked sends items in responses of at most streamChunk, each item
// exactly once, as the CRI's Stream* calls require.
func sendChunked[T any](items []T, send func([]T) error) error {
	for start := 0; start < len(items); start += streamChunk {
		if err := send(items[start:min(start+streamChunk, len(items))]); err != nil {
			return err
		}
	}
	return nil
}

// StreamPodSandboxes sends the same items as ListPodSandbox in chunks.
func (s *Server) StreamPodSandboxes(r *runtime.StreamPodSandboxesRequest, stream runtime.RuntimeService_StreamPodSandboxesServer) error {
	items := s.listSandboxes(r.GetFilter())
	return sendChunked(items, func(chunk []*runtime.PodSandbox) error {
		return stream.Send(&runtime.StreamPodSandboxesResponse{PodSandboxes: chunk})
	})
}
