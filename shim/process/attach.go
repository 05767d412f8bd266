package process

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// attachWriteTimeout bounds how long output waits for a slow attacher
// before that attacher is dropped: the container and its log must never
// stall on a client.
const attachWriteTimeout = 5 * time.Second

// AttachConfig names the caller's FIFOs (created and held open by it);
// empty means not wanted.
type AttachConfig struct {
	ID                    string
	Stdin, Stdout, Stderr string
}

// attacher is one attach session's FIFOs: out[0] gets stdout (or the
// terminal), out[1] stderr.
type attacher struct {
	out   [2]*os.File
	stdin *os.File
}

func (a *attacher) close() {
	for _, f := range []*os.File{a.out[0], a.out[1], a.stdin} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// fanReader hands everything read from a container stream to the attachers
// before the log writer sees it.
type fanReader struct {
	r   io.Reader
	s   *stdio
	idx int
}

func (f fanReader) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if n > 0 {
		f.s.fanout(f.idx, b[:n])
	}
	return n, err
}

func (s *stdio) fanout(idx int, b []byte) {
	s.attachMu.Lock()
	defer s.attachMu.Unlock()
	for id, a := range s.attachers {
		f := a.out[idx]
		if f == nil {
			continue
		}
		_ = f.SetWriteDeadline(time.Now().Add(attachWriteTimeout))
		if _, err := f.Write(b); err != nil {
			// Gone (EPIPE) or too slow: the session ends, output goes on.
			a.close()
			delete(s.attachers, id)
		}
	}
}

// attach adds a session. Its stdin, when the container has one, is copied
// into the container's stdin until EOF.
func (s *stdio) attach(c AttachConfig) (err error) {
	a := &attacher{}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	open := func(path string, flag int) (*os.File, error) {
		if path == "" {
			return nil, nil
		}
		f, err := os.OpenFile(path, flag|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("attach %q: open fifo: %w", c.ID, err)
		}
		return f, nil
	}
	if a.out[0], err = open(c.Stdout, os.O_WRONLY); err != nil {
		return err
	}
	// A terminal has one output stream; a stderr FIFO would only stay empty.
	if s.console == nil {
		if a.out[1], err = open(c.Stderr, os.O_WRONLY); err != nil {
			return err
		}
	}
	if s.stdin != nil {
		if a.stdin, err = open(c.Stdin, os.O_RDONLY); err != nil {
			return err
		}
	}
	s.attachMu.Lock()
	defer s.attachMu.Unlock()
	if s.outputDone {
		return fmt.Errorf("attach %q: container output has ended: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if _, ok := s.attachers[c.ID]; ok {
		return fmt.Errorf("attach %q: %w", c.ID, errdefs.ErrAlreadyExists)
	}
	if s.attachers == nil {
		s.attachers = map[string]*attacher{}
	}
	s.attachers[c.ID] = a
	if a.stdin != nil {
		go s.copyStdin(a.stdin)
	}
	return nil
}

func (s *stdio) copyStdin(r *os.File) {
	_, err := io.Copy(s.stdin, r)
	if err != nil && !errors.Is(err, os.ErrClosed) {
		return
	}
	if s.stdinOnce {
		s.closeMu.Lock()
		if !s.closed {
			_ = s.stdin.Close()
		}
		s.closeMu.Unlock()
	}
}

// detach ends a session; unknown ids are fine (the session may have been
// dropped already).
func (s *stdio) detach(id string) {
	s.attachMu.Lock()
	defer s.attachMu.Unlock()
	if a, ok := s.attachers[id]; ok {
		a.close()
		delete(s.attachers, id)
	}
}

// detachAll closes every session (their readers see EOF) and refuses new
// ones.
func (s *stdio) detachAll() {
	s.attachMu.Lock()
	defer s.attachMu.Unlock()
	s.outputDone = true
	for id, a := range s.attachers {
		a.close()
		delete(s.attachers, id)
	}
}

// Attach adds an attach session to the init process's stdio.
func (p *Init) Attach(c AttachConfig) error {
	if c.ID == "" {
		return fmt.Errorf("attach to container %q: id required: %w", p.id, errdefs.ErrInvalidArgument)
	}
	return p.io.attach(c)
}

// Detach ends an attach session.
func (p *Init) Detach(id string) { p.io.detach(id) }

// Resize sets the init's terminal size; errdefs.ErrFailedPrecondition
// without a terminal.
func (p *Init) Resize(width, height uint32) error {
	if p.io.console == nil {
		return fmt.Errorf("resize container %q without a terminal: %w", p.id, errdefs.ErrFailedPrecondition)
	}
	return resizeConsole(p.io.console, width, height)
}
