package streaming

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/berth-runtime/berth/sandbox/netns"
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
	var c net.Conn
	err := netns.Do(nsPath, func() error {
		var err error
		c, err = d.DialContext(ctx, "tcp4", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
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
