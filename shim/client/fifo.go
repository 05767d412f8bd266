package client

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Stdio between berthd and a shim goes through named FIFOs that berthd
// creates in a directory of its own and the shim opens by path (ttrpc
// carries no file descriptors). Opening a FIFO blocks, or fails with
// O_NONBLOCK, until the other side exists, so berthd holds placeholder ends
// until the shim confirms it opened its own:
//
//   - output (stdout/stderr): berthd opens the read end, plus a write end it
//     drops once the shim (or the process it handed the FIFO to) holds one,
//     so EOF means the writers are gone rather than not yet there;
//   - input (stdin): berthd opens it read-write, which never blocks, then a
//     write-only end once the shim reads, and drops the read-write one so a
//     write after the process is gone fails (EPIPE) instead of filling the
//     pipe.
//
// All files are non-blocking and in Go's poller, so Close interrupts a copy.
type fifoSet struct {
	dir                               string
	stdinPath, stdoutPath, stderrPath string

	// stdin is the write end (after opened); stdinHold the read-write
	// placeholder before.
	stdin, stdinHold *os.File
	stdout, stderr   *os.File
	// holds are the placeholder write ends of the outputs.
	holds []*os.File

	closeOnce sync.Once
}

// drainTimeout bounds how long output is read after the process exited: a
// background child may hold the FIFO open forever.
const drainTimeout = 2 * time.Second

func openFifo(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open fifo: %w", err)
	}
	return f, nil
}

// newFifoSet creates the wanted FIFOs in a new directory under parent.
func newFifoSet(parent string, stdin, stdout, stderr bool) (_ *fifoSet, err error) {
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("create fifo dir: %w", err)
	}
	dir, err := os.MkdirTemp(parent, "io")
	if err != nil {
		return nil, fmt.Errorf("create fifo dir: %w", err)
	}
	f := &fifoSet{dir: dir}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	mk := func(name string) (string, error) {
		p := filepath.Join(dir, name)
		if err := unix.Mkfifo(p, 0o600); err != nil {
			return "", fmt.Errorf("create fifo: %w", err)
		}
		return p, nil
	}
	output := func(name string, r **os.File) (string, error) {
		p, err := mk(name)
		if err != nil {
			return "", err
		}
		if *r, err = openFifo(p, os.O_RDONLY); err != nil {
			return "", err
		}
		w, err := openFifo(p, os.O_WRONLY)
		if err != nil {
			return "", err
		}
		f.holds = append(f.holds, w)
		return p, nil
	}
	if stdin {
		if f.stdinPath, err = mk("stdin"); err != nil {
			return nil, err
		}
		if f.stdinHold, err = openFifo(f.stdinPath, os.O_RDWR); err != nil {
			return nil, err
		}
	}
	if stdout {
		if f.stdoutPath, err = output("stdout", &f.stdout); err != nil {
			return nil, err
		}
	}
	if stderr {
		if f.stderrPath, err = output("stderr", &f.stderr); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// opened drops the placeholders once the shim holds its ends.
func (f *fifoSet) opened() error {
	if f.stdinHold != nil {
		w, err := openFifo(f.stdinPath, os.O_WRONLY)
		if err != nil {
			return err
		}
		f.stdin = w
		_ = f.stdinHold.Close()
		f.stdinHold = nil
	}
	for _, h := range f.holds {
		_ = h.Close()
	}
	f.holds = nil
	return nil
}

// copyOutput copies the outputs to their writers (nil: discarded) and
// returns a channel closed when both reached EOF.
func (f *fifoSet) copyOutput(stdout, stderr io.Writer) <-chan struct{} {
	var wg sync.WaitGroup
	for _, c := range []struct {
		r *os.File
		w io.Writer
	}{{f.stdout, stdout}, {f.stderr, stderr}} {
		if c.r == nil {
			continue
		}
		if c.w == nil {
			c.w = io.Discard
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(c.w, c.r)
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// copyInput copies r to stdin and closes it at r's EOF, which the process
// sees as its own EOF.
func (f *fifoSet) copyInput(r io.Reader) {
	if f.stdin == nil || r == nil {
		return
	}
	w := f.stdin
	go func() {
		_, err := io.Copy(w, r)
		if err == nil || errors.Is(err, syscall.EPIPE) {
			_ = w.Close()
		}
	}()
}

// closeOutput interrupts the output copies.
func (f *fifoSet) closeOutput() {
	for _, r := range []*os.File{f.stdout, f.stderr} {
		if r != nil {
			_ = r.Close()
		}
	}
}

// close closes every end and removes the directory; idempotent.
func (f *fifoSet) close() {
	f.closeOnce.Do(func() {
		for _, x := range append([]*os.File{f.stdin, f.stdinHold, f.stdout, f.stderr}, f.holds...) {
			if x != nil {
				_ = x.Close()
			}
		}
		_ = os.RemoveAll(f.dir)
	})
}
