// Command berth-pause is the infra process of a pod whose containers share
// one PID namespace. berthd starts it as PID 1 of that namespace, already
// inside the pod's network, IPC and UTS namespaces (it forks from a thread
// that joined them), so berth-pause itself only does what an init must:
// reap the orphans reparented to it, and exit 0 on SIGINT or SIGTERM.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: berth-pause (no arguments; started by berthd)")
		os.Exit(2)
	}
	// Outside a new PID namespace (e.g. run by hand) still collect orphans.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGINT, unix.SIGTERM)
	// Children may have exited before Notify; their SIGCHLD is gone.
	reap()
	for s := range sigs {
		if s == unix.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap waits for every exited child without blocking. SIGCHLD is not
// queued per child, so one signal may stand for many exits.
func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}
