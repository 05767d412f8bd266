package streaming

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// DialInNetNS connects to 127.0.0.1:port inside the network namespace
// pinned at nsPath ("" dials in berthd's own, for host-network pods). The
// socket is made inside the namespace and keeps belonging to it, so only
// the dial runs on a thread switched into it.
func DialInNetNS(ctx context.Context, nsPath string, port int32) (net.Conn, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	var d net.Dialer
	if nsPath == "" {
		return d.DialContext(ctx, "tcp4", addr)
	}
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %q: %w", nsPath, err)
	}
	defer target.Close()

	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// This goroutine's thread is switched; if it cannot be switched
		// back it stays locked, and Go ends the thread with the goroutine.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("open own network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("enter network namespace %q: %w", nsPath, err)}
			return
		}
		c, err := d.DialContext(ctx, "tcp4", addr)
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	return r.c, nil
}

// Forward copies between stream and conn until both directions end or ctx
// is done, then closes both.
func Forward(ctx context.Context, stream io.ReadWriteCloser, conn net.Conn) error {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, errs[0] = io.Copy(conn, stream)
		// The client finished sending: pass the half-close on.
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	go func() {
		defer wg.Done()
		_, errs[1] = io.Copy(stream, conn)
		// The pod closed its side; the stream ends with it.
		_ = stream.Close()
	}()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		// The copies end once their reads fail on the closed ends; the
		// client is gone, so nobody waits for them.
		_ = conn.Close()
		_ = stream.Close()
		return nil
	}
	_ = conn.Close()
	for _, err := range errs {
		if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
			return err
		}
	}
	return nil
}
