package stats

import (
	"github.com/berth-runtime/berth/cri/cgroups"
	"github.com/berth-runtime/berth/cri/store"
)

// WatchOOM returns the container cgroup's OOM kill counter when berthd
// starts watching it. A container not started yet has run nothing of its
// own, so its current count is the baseline; one found running after a
// restart is measured from 0, since its cgroup was created for it (the
// path ends in its unique ID) and every kill in it happened in its life.
//
// It also starts watching the cgroup's counter (cgroup v2), so an OOM kill
// is still known when the cgroup is gone by the time the exit arrives.
func (c *Collector) WatchOOM(rec store.Container) uint64 {
	path, err := c.CgroupOf(rec)
	if err != nil {
		return 0
	}
	if c.oom != nil {
		if err := c.oom.Add(path); err != nil {
			c.log.Warn("watch OOM kill counter", "container_id", rec.ID, "error", err)
		}
	}
	if rec.Status.State != store.ContainerCreated {
		return 0
	}
	n, err := c.cg.OOMKills(path)
	if err != nil {
		return 0
	}
	return n
}

// OOMKilled reports whether the kernel OOM-killed a process in the
// container's own memory cgroup since base: a delta, so a clean exit after
// SIGTERM in a cgroup that never hit its limit is never called OOMKilled.
// It must run before the runtime deletes the cgroup; under the systemd
// driver systemd removes the container's scope as soon as it is empty,
// often before this runs, and the count the watcher last read stands in.
// It stops watching the cgroup.
func (c *Collector) OOMKilled(rec store.Container, base uint64) bool {
	path, err := c.CgroupOf(rec)
	if err != nil {
		return false
	}
	n, err := c.cg.OOMKills(path)
	if c.oom != nil {
		defer c.oom.Remove(path)
		if seen, ok := c.oom.Kills(path); ok && (err != nil || seen > n) {
			n, err = seen, nil
		}
	}
	if err != nil {
		if !cgroups.IsGone(err) {
			c.log.Warn("read OOM kill counter", "container_id", rec.ID, "error", err)
		}
		return false
	}
	return n > base
}
