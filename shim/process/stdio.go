package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/shim/logging"
)

// stdio is the shim's side of the container's standard streams: pipes, or
// a PTY master, pumped into the CRI log.
type stdio struct {
	log *logging.Writer
	// stdin is the write end of the stdin pipe (or the PTY master), kept for
	// attach; nil without stdin.
	stdin io.WriteCloser
	// readers are the ends the copiers read; closed to stop a copy that a
	// leftover grandchild would otherwise keep open forever.
	readers []*os.File
	// console is the PTY master with a terminal (also readers[0]), kept
	// for resize; nil with pipes.
	console *os.File
	// stdinOnce closes the container's stdin when the first attached stdin
	// ends.
	stdinOnce bool
	wg        sync.WaitGroup
	done      chan struct{}
	closeMu   sync.Mutex
	closed    bool // guarded by closeMu

	attachMu sync.Mutex
	// attachers receive the output as it is read; guarded by attachMu.
	attachers map[string]*attacher
	// outputDone is set once output ended: no attach starts after;
	// guarded by attachMu.
	outputDone bool
}

// childStdio are the files the runtime (and so the container) inherits; the
// shim closes its copies once create returned.
type childStdio struct {
	stdin, stdout, stderr *os.File
}

func (c childStdio) close() {
	for _, f := range []*os.File{c.stdin, c.stdout, c.stderr} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// newPipeStdio creates stdout/stderr pipes (and stdin when asked).
// On failure the log writer is left open: the caller owns it.
func newPipeStdio(lw *logging.Writer, withStdin bool) (_ *stdio, _ childStdio, err error) {
	s := &stdio{done: make(chan struct{})}
	var child childStdio
	defer func() {
		if err != nil {
			child.close()
			s.closeAll()
		}
	}()
	if withStdin {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, childStdio{}, fmt.Errorf("create stdin pipe: %w", err)
		}
		child.stdin, s.stdin = r, w
	}
	for _, dst := range []**os.File{&child.stdout, &child.stderr} {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, childStdio{}, fmt.Errorf("create output pipe: %w", err)
		}
		*dst = w
		s.readers = append(s.readers, r)
	}
	s.log = lw
	return s, child, nil
}

// startCopy pumps the readers into the log; readers[0] is stdout and, with
// pipes, readers[1] stderr.
func (s *stdio) startCopy() {
	streams := []logging.Stream{logging.Stdout, logging.Stderr}
	for i, r := range s.readers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = s.log.Copy(streams[i], fanReader{r: r, s: s, idx: i})
		}()
	}
	go func() {
		s.wg.Wait()
		close(s.done)
	}()
}

// drain waits for the copiers to reach EOF, at most timeout: a grandchild
// that outlives init may hold the write end, and the exit must not wait on it.
func (s *stdio) drain(timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
		return
	case <-t.C:
	}
	s.closeReaders()
	<-s.done
}

func (s *stdio) closeReaders() {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	for _, r := range s.readers {
		_ = r.Close()
	}
}

// closeAll releases every file; idempotent.
func (s *stdio) closeAll() {
	s.closeReaders()
	s.detachAll()
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.stdin != nil {
		_ = s.stdin.Close()
	}
	if s.log != nil {
		_ = s.log.Close()
	}
}

// consoleSocket receives the PTY master from the runtime
// (--console-socket). It lives in its own short temp dir because unix
// socket paths are limited to 108 bytes.
type consoleSocket struct {
	dir  string
	path string
	l    *net.UnixListener
}

func newConsoleSocket() (*consoleSocket, error) {
	dir, err := os.MkdirTemp("/tmp", "bpty")
	if err != nil {
		return nil, fmt.Errorf("create console socket dir: %w", err)
	}
	path := filepath.Join(dir, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("listen on console socket: %w", err)
	}
	return &consoleSocket{dir: dir, path: path, l: l}, nil
}

// receive accepts the runtime's connection and returns the master it sends.
func (c *consoleSocket) receive(ctx context.Context) (*os.File, error) {
	if d, ok := ctx.Deadline(); ok {
		_ = c.l.SetDeadline(d)
	}
	conn, err := c.l.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("accept console connection: %w", err)
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("receive console: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("receive console: malformed control message")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		return nil, errors.New("receive console: expected one file descriptor")
	}
	// Non-blocking so reads go through the poller and Close interrupts them.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		_ = unix.Close(fds[0])
		return nil, fmt.Errorf("set console non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "pty-master"), nil
}

func (c *consoleSocket) close() {
	_ = c.l.Close()
	_ = os.RemoveAll(c.dir)
}

// newConsoleStdio wraps a received master: output is the stdout stream and,
// with stdin, input is written to the same master.
func newConsoleStdio(lw *logging.Writer, master *os.File, withStdin bool) *stdio {
	s := &stdio{log: lw, done: make(chan struct{}), readers: []*os.File{master}, console: master}
	if withStdin {
		s.stdin = nopCloser{master}
	}
	return s
}

// nopCloser lets the master be both a reader (closed by closeReaders) and
// the stdin writer without a double close.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
