package kubelet

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/berth-runtime/berth/test/testutil"
)

type summary struct {
	Pods []struct {
		PodRef struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"podRef"`
		CPU        *cpuStats `json:"cpu"`
		Memory     *memStats `json:"memory"`
		Containers []struct {
			Name   string    `json:"name"`
			CPU    *cpuStats `json:"cpu"`
			Memory *memStats `json:"memory"`
		} `json:"containers"`
	} `json:"pods"`
}

type cpuStats struct {
	UsageCoreNanoSeconds *uint64 `json:"usageCoreNanoSeconds"`
}

type memStats struct {
	WorkingSetBytes *uint64 `json:"workingSetBytes"`
}

func (c *cpuStats) ok() bool {
	return c != nil && c.UsageCoreNanoSeconds != nil && *c.UsageCoreNanoSeconds > 0
}
func (m *memStats) ok() bool { return m != nil && m.WorkingSetBytes != nil && *m.WorkingSetBytes > 0 }

// statsGaps lists what /stats/summary lacks: a pod of pods, or one of its
// containers, without CPU usage or a memory working set.
func (e *env) statsGaps(pods map[string][]string) []string {
	b, err := e.k.get("/stats/summary")
	if err != nil {
		return []string{err.Error()}
	}
	var s summary
	if err := json.Unmarshal(b, &s); err != nil {
		return []string{fmt.Sprintf("decode /stats/summary: %v", err)}
	}
	found := map[string]bool{}
	var gaps []string
	for _, p := range s.Pods {
		if p.PodRef.Namespace != e.ns {
			continue
		}
		name := strings.TrimSuffix(p.PodRef.Name, "-"+nodeName)
		ctrs, want := pods[name]
		if !want {
			continue
		}
		found[name] = true
		if !p.CPU.ok() || !p.Memory.ok() {
			gaps = append(gaps, fmt.Sprintf("pod %s without cpu or memory figures", name))
		}
		have := map[string]bool{}
		for _, c := range p.Containers {
			have[c.Name] = c.CPU.ok() && c.Memory.ok()
		}
		for _, c := range ctrs {
			if !have[c] {
				gaps = append(gaps, fmt.Sprintf("container %s/%s missing or without cpu or memory figures", name, c))
			}
		}
	}
	for name := range pods {
		if !found[name] {
			gaps = append(gaps, "pod "+name+" not listed")
		}
	}
	sort.Strings(gaps)
	return gaps
}

// checkStatsAndLogs: kubelet's /containerLogs returns every container's
// marker, and /stats/summary has CPU and memory for every pod and
// container (it may take a housekeeping period to list new ones).
func (e *env) checkStatsAndLogs(t *testing.T, pods map[string][]string) {
	t.Helper()
	for p, ctrs := range pods {
		for _, c := range ctrs {
			out, err := e.k.logs(e.ns, p, c)
			if err != nil || !strings.Contains(out, markerOf(p, c)) {
				t.Errorf("/containerLogs of %s/%s: %q (%v), want its marker", p, c, truncate(out, 200), err)
			}
		}
	}
	var gaps []string
	if _, err := waitFor(90*time.Second, "stats of every pod", func() bool {
		gaps = e.statsGaps(pods)
		return len(gaps) == 0
	}); err != nil {
		t.Errorf("%v: /stats/summary: %s", err, strings.Join(gaps, "; "))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// teardown removes what is left of the run's pods through kubelet, waits
// until berthd holds none of them, stops kubelet, and checks that nothing
// is left: berthd's mounts, pins, processes, cgroups, state files, the
// bridge's addresses and veths, and the container cgroups under kubelet's
// /kubepods hierarchy.
func (e *env) teardown(t *testing.T) {
	entries, _ := filepath.Glob(filepath.Join(e.k.manifests, "*.json"))
	for _, m := range entries {
		e.k.del(t, strings.TrimSuffix(filepath.Base(m), ".json"))
	}
	if _, err := waitFor(150*time.Second, "every pod of the run gone from berthd", func() bool {
		o := e.snapshot(t)
		return len(o.sandboxes) == 0 && len(o.containers) == 0
	}); err != nil {
		o := e.snapshot(t)
		t.Errorf("%v: sandboxes %v containers %v", err, o.sandboxes, o.containers)
	}
	if !e.k.running() {
		t.Errorf("kubelet exited during the run; log tail:\n%s", e.k.logTail(4096))
	}
	e.k.stop()
	testutil.AssertNothingLeft(t, e.d, e.net)
	for _, c := range e.kubepodsCgroups() {
		t.Errorf("leak: container cgroup %s", c)
	}
}

// kubepodsCgroups lists cgroups named after a container of the run below
// kubelet's /kubepods in every hierarchy.
func (e *env) kubepodsCgroups() []string {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	if more, _ := filepath.Glob("/sys/fs/cgroup/kubepods"); len(more) > 0 {
		roots = append(roots, more...)
	}
	var left []string
	for _, r := range roots {
		_ = filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			for id := range e.seen {
				if strings.Contains(filepath.Base(p), id) {
					left = append(left, p)
				}
			}
			return nil
		})
	}
	return left
}
