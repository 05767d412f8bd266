package server

import "github.com/berth-runtime/berth/cri/store"

// oomBaseline starts watching the OOM kill counter of rec's cgroup and
// returns its baseline (stats.WatchOOM).
func (s *Server) oomBaseline(rec store.Container) uint64 { return s.stats.WatchOOM(rec) }

// recordOOM sets reason OOMKilled when the kernel OOM-killed a process in
// the container's own memory cgroup since base. It runs before the
// runtime deletes the cgroup.
func (s *Server) recordOOM(rec store.Container, base uint64) {
	if !s.stats.OOMKilled(rec, base) {
		return
	}
	if _, err := s.store.UpdateContainerStatus(rec.ID, func(st store.ContainerStatus) (store.ContainerStatus, error) {
		if st.State != store.ContainerExited {
			st.Reason = "OOMKilled"
		}
		return st, nil
	}); err != nil {
		s.log.Warn("record OOM kill", "container_id", rec.ID, "error", err)
	}
}
