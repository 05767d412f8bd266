package main

// sdnotify.go speaks systemd's notify protocol (sd_notify(3)), so the unit
// can be Type=notify: `systemctl start berth` returns once berthd serves
// and recovery is done, and systemd knows when it stops. The protocol is
// one datagram of newline-separated VAR=value lines to the unix socket
// NOTIFY_SOCKET names; without it every call is a no-op.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"
)

// notifyEnv are the variables systemd passes berthd for the protocol.
// berthd unsets them so no shim, OCI runtime or container inherits them:
// runc with NOTIFY_SOCKET set would proxy the socket into the container.
var notifyEnv = []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}

// sdNotifier sends state changes to systemd.
type sdNotifier struct {
	socket   string        // "" when not started by systemd with Type=notify
	watchdog time.Duration // 0 when systemd expects no keep-alives
	log      *slog.Logger
}

// newSDNotifier reads the protocol's environment and removes it from ours.
func newSDNotifier(log *slog.Logger) *sdNotifier {
	n := &sdNotifier{socket: os.Getenv("NOTIFY_SOCKET"), log: log}
	if usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && usec > 0 {
		// WATCHDOG_PID, when set, names the process the watchdog is for.
		if pid := os.Getenv("WATCHDOG_PID"); pid == "" || pid == strconv.Itoa(os.Getpid()) {
			n.watchdog = time.Duration(usec) * time.Microsecond
		}
	}
	for _, k := range notifyEnv {
		_ = os.Unsetenv(k)
	}
	return n
}

// notify sends state ("READY=1", "STOPPING=1", ...) in one datagram. A
// name starting with @ is an abstract socket, which Go's dialer handles.
func (n *sdNotifier) notify(state string) error {
	if n.socket == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("dial systemd notify socket: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}

// send is notify that logs a failure: systemd's bookkeeping must never
// stop berthd from serving.
func (n *sdNotifier) send(state string) {
	if err := n.notify(state); err != nil {
		n.log.Warn("systemd notification failed", "state", state, "error", err)
	}
}

// keepAlive sends WATCHDOG=1 at half the interval systemd asked for
// (WatchdogSec=), as sd_watchdog_enabled(3) advises, until ctx ends.
func (n *sdNotifier) keepAlive(ctx context.Context) {
	if n.socket == "" || n.watchdog == 0 {
		return
	}
	t := time.NewTicker(n.watchdog / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.send("WATCHDOG=1")
		}
	}
}
