package server

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
)

// containerEvent publishes a lifecycle event of container id with the
// statuses kubelet's evented PLEG caches: the pod's and all its
// containers'. Call it after the transition is persisted, and for
// CONTAINER_DELETED_EVENT after the record is gone.
func (s *Server) containerEvent(id, sandboxID string, typ runtime.ContainerEventType) {
	if s.events.Subscribers() == 0 {
		return
	}
	sb, err := s.store.Sandbox(sandboxID)
	if err != nil {
		// The pod went meanwhile; its own DELETED event tells kubelet.
		return
	}
	s.publish(id, sb, typ)
}

// sandboxEvent publishes a lifecycle event of the pod itself, with the
// sandbox ID as the container ID (as containerd does). For
// CONTAINER_DELETED_EVENT pass the record read before it was deleted:
// kubelet drops the pod from its cache only when the event's pod status
// carries the deleted ID.
func (s *Server) sandboxEvent(sb store.Sandbox, typ runtime.ContainerEventType) {
	if s.events.Subscribers() == 0 {
		return
	}
	if typ != runtime.ContainerEventType_CONTAINER_DELETED_EVENT {
		if cur, err := s.store.Sandbox(sb.ID); err == nil {
			sb = cur
		}
	}
	s.publish(sb.ID, sb, typ)
}

func (s *Server) publish(id string, sb store.Sandbox, typ runtime.ContainerEventType) {
	ev := &runtime.ContainerEventResponse{
		ContainerId:        id,
		ContainerEventType: typ,
		CreatedAt:          time.Now().UnixNano(),
		PodSandboxStatus:   s.podStatus(sb),
	}
	for _, c := range s.store.ContainersOf(sb.ID) {
		ev.ContainersStatuses = append(ev.ContainersStatuses, s.containerStatus(c))
	}
	s.events.Publish(ev)
}

// podStatus is what every report of a sandbox says: events carry it as is,
// PodSandboxStatus adds the namespaces from the pod's config.
func (s *Server) podStatus(sb store.Sandbox) *runtime.PodSandboxStatus {
	st := &runtime.PodSandboxStatus{
		Id:             sb.ID,
		Metadata:       podMetadata(sb),
		State:          podState(sb.Status.State),
		CreatedAt:      sb.CreatedAt,
		Labels:         sb.Labels,
		Annotations:    sb.Annotations,
		RuntimeHandler: sb.RuntimeHandler,
	}
	if ips := sb.Status.IPs; len(ips) > 0 && sb.Status.State == store.SandboxReady {
		st.Network = &runtime.PodSandboxNetworkStatus{Ip: ips[0]}
		for _, ip := range ips[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtime.PodIP{Ip: ip})
		}
	}
	return st
}

// GetContainerEvents streams lifecycle events until the client goes. A
// client too slow to keep up is cut off with Unavailable, so it
// reconnects and relists instead of missing events unknowingly.
func (s *Server) GetContainerEvents(r *runtime.GetEventsRequest, stream runtime.RuntimeService_GetContainerEventsServer) error {
	sub := s.events.Subscribe()
	defer sub.Close()
	ctx := stream.Context()
	for {
		select {
		case ev := <-sub.Events():
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-sub.Done():
			// Deliver what was queued before the cut, then end.
			for {
				select {
				case ev := <-sub.Events():
					if err := stream.Send(ev); err != nil {
						return err
					}
				default:
					return fmt.Errorf("container events: %w: %w", sub.Err(), errdefs.ErrUnavailable)
				}
			}
		case <-ctx.Done():
			return nil
		}
	}
}
