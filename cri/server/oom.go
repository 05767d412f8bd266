package server

import (
	"github.com/berth-runtime/berth/cri/cgroups"
	"github.com/berth-runtime/berth/cri/store"
)

// oomBaseline is the container cgroup's OOM kill counter when berthd
// starts watching it. A container not started yet has run nothing of its
// own, so its current count is the baseline; one found running after a
// restart is measured from 0, since its cgroup was created for it (the
// path ends in its unique ID) and every kill in it happened in its life.
//
// It also starts watching the cgroup's counter (cgroup v2), so an OOM kill
// is still known when the cgroup is gone by the time the exit arrives.
func (s *Server) oomBaseline(rec store.Container) uint64 {
	path, err := s.stats.cgroupOf(rec)
	if err != nil {
		return 0
	}
	if err := s.oom.Add(path); err != nil {
		s.log.Warn("watch OOM kill counter", "container_id", rec.ID, "error", err)
	}
	if rec.Status.State != store.ContainerCreated {
		return 0
	}
	n, err := s.stats.cg.OOMKills(path)
	if err != nil {
		return 0
	}
	return n
}

// recordOOM sets reason OOMKilled when the kernel OOM-killed a process in
// the container's own memory cgroup since base: a delta, so a clean exit
// after SIGTERM in a cgroup that never hit its limit is never called
// OOMKilled. It must run before the runtime deletes the cgroup; under the
// systemd driver systemd removes the container's scope as soon as it is
// empty, often before this runs, and the count the watcher last read
// stands in.
func (s *Server) recordOOM(rec store.Container, base uint64) {
	path, err := s.stats.cgroupOf(rec)
	if err != nil {
		return
	}
	defer s.oom.Remove(path)
	n, err := s.stats.cg.OOMKills(path)
	if seen, ok := s.oom.Kills(path); ok && (err != nil || seen > n) {
		n, err = seen, nil
	}
	if err != nil {
		if !cgroups.IsGone(err) {
			s.log.Warn("read OOM kill counter", "container_id", rec.ID, "error", err)
		}
		return
	}
	if n <= base {
		return
	}
	if _, err := s.store.UpdateContainer(rec.ID, func(c *store.Container) error {
		if c.Status.State != store.ContainerExited {
			c.Status.Reason = "OOMKilled"
		}
		return nil
	}); err != nil {
		s.log.Warn("record OOM kill", "container_id", rec.ID, "error", err)
	}
}
