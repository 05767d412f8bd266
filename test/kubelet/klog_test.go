package kubelet

import (
	"bufio"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// klogLine is klog's header: level, MMDD hh:mm:ss.micros, thread, file:line.
var klogLine = regexp.MustCompile(`^([IWEF])(\d{4} \d{2}:\d{2}:\d{2}\.\d{6})\s+\d+\s+([^\]]+)\] (.*)$`)

// expected is a kubelet error or warning the run provokes on purpose or
// that is about the host, not the runtime; anything else is a bug.
type expected struct {
	reason string
	match  func(e *env, at time.Time, msg string) bool
}

func has(subs ...string) func(*env, time.Time, string) bool {
	return func(_ *env, _ time.Time, msg string) bool {
		for _, s := range subs {
			if !strings.Contains(msg, s) {
				return false
			}
		}
		return true
	}
}

// within is true for lines logged up to d after one of the times.
func within(at time.Time, d time.Duration, times []time.Time) bool {
	for _, t := range times {
		if !at.Before(t) && at.Sub(t) <= d {
			return true
		}
	}
	return false
}

// removedID is a container kubelet itself asked to remove ("RemoveContainer").
var removedID = regexp.MustCompile(`"RemoveContainer" containerID="([0-9a-f]+)"`)

// statusNotFound is kubelet failing ContainerStatus on a container berthd
// does not know.
var statusNotFound = regexp.MustCompile(`"ContainerStatus from runtime service failed" err="rpc error: code = NotFound.* containerID="([0-9a-f]+)"`)

var expectedLines = []expected{
	{"host: without CAP_SYS_RESOURCE kubelet cannot lower its own oom_score_adj or raise its file limit",
		func(_ *env, _ time.Time, msg string) bool {
			return strings.Contains(msg, "Failed to ApplyOOMScoreAdj") ||
				strings.Contains(msg, "Failed to set rlimit on max file handles")
		}},
	{"host: PID 1 is not an init kubelet can place (\"failed to find pid namespace of init process\")",
		has("Failed to ensure process in container with oom score", "failed to find pid namespace of init process")},
	{"standalone kubelet: there is no Node object and no API server for CSI",
		func(_ *env, _ time.Time, msg string) bool {
			return strings.Contains(msg, "failed to check if node is newer") ||
				strings.Contains(msg, "kubeclient not set, assuming standalone kubelet") ||
				strings.Contains(msg, "Skipping CSINode initialization, kubelet running in standalone mode")
		}},
	{"kubelet start: pod sync waits for the first runtime status and relist; fresh root has no checkpoint; kmsg",
		func(e *env, at time.Time, msg string) bool {
			return within(at, 15*time.Second, e.k.starts) && (strings.Contains(msg, `"Skipping pod synchronization"`) ||
				strings.Contains(msg, "short read from kmsg") ||
				strings.Contains(msg, `"Failed to read data from checkpoint" err="checkpoint is not found"`))
		}},
	{"kubelet stop: its shutdown cancels the CRI calls it has in flight",
		func(e *env, at time.Time, msg string) bool {
			return within(at, 15*time.Second, e.k.stops) && strings.Contains(msg, "code = Canceled desc = context canceled")
		}},
	{"cadvisor knows the image filesystem label of docker, containerd and CRI-O endpoints only",
		has("eviction manager: failed to check if we have separate container filesystem", "no imagefs label for configured runtime")},
	{"cadvisor: a cgroup of another tenant of the host went away before cadvisor watched it",
		func(_ *env, _ time.Time, msg string) bool {
			return strings.Contains(msg, "inotify_add_watch /sys/fs/cgroup/") && strings.Contains(msg, "no such file or directory") &&
				!strings.Contains(msg, "kubepods")
		}},
	{"kubelet's own race: a second RemoveContainer asks the status of a container it already removed",
		func(e *env, _ time.Time, msg string) bool {
			m := statusNotFound.FindStringSubmatch(msg)
			return m != nil && e.removed[m[1]]
		}},
	{"the missing-image pod: pull errors and back-off for the image missing on purpose",
		func(e *env, _ time.Time, msg string) bool {
			return strings.Contains(msg, e.missingRepo()) && (strings.Contains(msg, "code = NotFound") ||
				strings.Contains(msg, "ErrImagePull") || strings.Contains(msg, "ImagePullBackOff"))
		}},
	{"berthd killed on purpose: kubelet's calls fail while it is down and until it reconnects",
		func(e *env, at time.Time, msg string) bool {
			for _, w := range e.downtime {
				if !at.Before(w.from) && !at.After(w.to) {
					return strings.Contains(msg, "code = Unavailable") || strings.Contains(msg, "connection refused") ||
						strings.Contains(msg, "PLEG is not healthy") || strings.Contains(msg, "container runtime is down")
				}
			}
			return false
		}},
}

// checkKubeletLog fails on every warning or error kubelet logged during
// the run that expectedLines does not explain.
func (e *env) checkKubeletLog(t *testing.T) {
	f, err := os.Open(e.k.logPath)
	if err != nil {
		t.Fatalf("kubelet log: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	year := time.Now().Year()
	var bad []string
	counts := map[string]int{}
	for sc.Scan() {
		if r := removedID.FindStringSubmatch(sc.Text()); r != nil {
			e.removed[r[1]] = true
		}
		m := klogLine.FindStringSubmatch(sc.Text())
		if m == nil || (m[1] != "W" && m[1] != "E" && m[1] != "F") {
			continue
		}
		at, err := time.ParseInLocation("2006 0102 15:04:05.000000", strconv.Itoa(year)+" "+m[2], time.Local)
		if err != nil {
			t.Errorf("kubelet log time %q: %v", m[2], err)
			continue
		}
		ok := false
		for _, x := range expectedLines {
			if x.match(e, at, m[4]) {
				counts[x.reason]++
				ok = true
				break
			}
		}
		if !ok {
			bad = append(bad, truncate(sc.Text(), 600))
		}
	}
	for r, n := range counts {
		t.Logf("expected kubelet warnings/errors: %d x %s", n, r)
	}
	for i, l := range bad {
		if i == 40 {
			t.Errorf("... and %d more", len(bad)-i)
			break
		}
		t.Errorf("kubelet: %s", l)
	}
}
