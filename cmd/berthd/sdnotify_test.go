package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// notifySocket listens where a test's NOTIFY_SOCKET points, as systemd does.
func notifySocket(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func readDatagram(t *testing.T, conn *net.UnixConn, within time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(within))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification within %s: %v", within, err)
	}
	return string(buf[:n])
}

func TestSDNotify(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify.sock"), fmt.Sprintf("@berth-test-notify-%d", os.Getpid())} {
		t.Run(name, func(t *testing.T) {
			conn := notifySocket(t, name)
			t.Setenv("NOTIFY_SOCKET", name)
			t.Setenv("WATCHDOG_USEC", "100000")
			t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
			n := newSDNotifier(slog.New(slog.NewTextHandler(io.Discard, nil)))
			for _, k := range notifyEnv {
				if v, ok := os.LookupEnv(k); ok {
					t.Errorf("%s=%s is still set: children would inherit it", k, v)
				}
			}
			if n.watchdog != 100*time.Millisecond {
				t.Errorf("watchdog = %s, want 100ms", n.watchdog)
			}
			if err := n.notify("READY=1\nSTATUS=serving"); err != nil {
				t.Fatal(err)
			}
			if got := readDatagram(t, conn, time.Second); got != "READY=1\nSTATUS=serving" {
				t.Errorf("notification = %q", got)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { n.keepAlive(ctx); close(done) }()
			for range 2 {
				if got := readDatagram(t, conn, time.Second); got != "WATCHDOG=1" {
					t.Errorf("keep-alive = %q, want WATCHDOG=1", got)
				}
			}
			cancel()
			<-done
		})
	}
}

func TestSDNotifyOff(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := newSDNotifier(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := n.notify("READY=1"); err != nil {
		t.Errorf("notify without NOTIFY_SOCKET: %v, want a no-op", err)
	}
	n.keepAlive(context.Background()) // returns at once without a socket

	// A watchdog meant for another process (WATCHDOG_PID) is not ours.
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "n.sock"))
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	if n := newSDNotifier(slog.New(slog.NewTextHandler(io.Discard, nil))); n.watchdog != 0 {
		t.Errorf("watchdog = %s for another pid, want off", n.watchdog)
	}
}
