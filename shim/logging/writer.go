// Package logging writes a container's stdout and stderr into one file in
// the CRI log format kubelet reads:
//
//	<RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>\n
//
// Lines longer than MaxLineSize bytes are split into full-size partial (P)
// lines followed by a final (F) one; output that ends without a newline
// ends with a partial line.
package logging

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// MaxLineSize is the most content bytes one log line carries; longer lines
// are split, as containerd and CRI-O do, so a reader never needs to buffer an
// unbounded line.
const MaxLineSize = 16384

// Stream names one of the container's output streams.
type Stream string

// The streams CRI knows.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

const (
	tagPartial = 'P'
	tagFull    = 'F'
)

// Writer is the CRI log file shared by a container's streams.
type Writer struct {
	path string
	// now is replaceable in tests; always time.Now otherwise.
	now func() time.Time

	mu sync.Mutex
	f  *os.File // guarded by mu; nil when path is empty (discard) or closed
	// closed is set by Close so a later Reopen does not resurrect the file
	// of a container whose output has ended; guarded by mu.
	closed bool
}

// Open opens (appending, creating 0640) the CRI log at path. An empty path
// returns a Writer that discards everything.
func Open(path string) (*Writer, error) {
	w := &Writer{path: path, now: time.Now}
	if path == "" {
		return w, nil
	}
	f, err := openLog(path)
	if err != nil {
		return nil, err
	}
	w.f = f
	return w, nil
}

func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open container log %q: %w", path, err)
	}
	return f, nil
}

// Reopen closes and reopens the log file, so a file rotated away by kubelet
// (ReopenContainerLog) is replaced by a fresh one at the same path. After
// Close it does nothing.
func (w *Writer) Reopen() error {
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if w.path == "" || closed {
		return nil
	}
	f, err := openLog(w.path)
	if err != nil {
		return err
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		_ = f.Close()
		return nil
	}
	old := w.f
	w.f = f
	w.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// Close closes the log file. Copies still running discard their output.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// Copy reads r until EOF (or a read error) and writes each line of it as
// stream. Write errors do not stop the copy: the container must never block
// on a full or broken log. It returns the first write error, if any, or the
// read error other than EOF.
func (w *Writer) Copy(stream Stream, r io.Reader) error {
	br := bufio.NewReaderSize(r, MaxLineSize+1)
	var (
		buf      []byte
		writeErr error
	)
	emit := func(tag byte, content []byte) {
		if err := w.writeLine(stream, tag, content); err != nil && writeErr == nil {
			writeErr = err
		}
	}
	// splitLong writes full partial lines while more than MaxLineSize bytes
	// are pending; what remains may still end a line as a final one.
	splitLong := func() {
		for len(buf) > MaxLineSize {
			emit(tagPartial, buf[:MaxLineSize])
			buf = append(buf[:0], buf[MaxLineSize:]...)
		}
	}
	for {
		chunk, err := br.ReadSlice('\n')
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			buf = buf[:len(buf)-1] // drop the newline
			splitLong()
			emit(tagFull, buf)
			buf = buf[:0]
		case errors.Is(err, bufio.ErrBufferFull):
			splitLong()
		default:
			splitLong()
			if len(buf) > 0 {
				// The output ended without ending its line: a partial
				// line, as containerd writes it, so kubelet reads back
				// exactly what was written (a FallbackToLogsOnError
				// termination message of "echo -n DONE" is "DONE").
				emit(tagPartial, buf)
			}
			if errors.Is(err, io.EOF) || isClosedRead(err) {
				return writeErr
			}
			return errors.Join(writeErr, fmt.Errorf("read %s: %w", stream, err))
		}
	}
}

func (w *Writer) writeLine(stream Stream, tag byte, content []byte) error {
	ts := w.now().Format(time.RFC3339Nano)
	line := make([]byte, 0, len(ts)+len(stream)+len(content)+5)
	line = append(line, ts...)
	line = append(line, ' ')
	line = append(line, stream...)
	line = append(line, ' ', tag, ' ')
	line = append(line, content...)
	line = append(line, '\n')

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	if _, err := w.f.Write(line); err != nil {
		return fmt.Errorf("write container log %q: %w", w.path, err)
	}
	return nil
}

// isClosedRead reports the errors a stdio reader ends with when the other
// side is gone rather than broken: a PTY master returns EIO once the last
// slave fd closes, and the shim closes pipes it stops draining.
func isClosedRead(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EIO)
}
