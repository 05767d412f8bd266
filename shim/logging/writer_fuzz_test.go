package logging

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzWriter copies arbitrary output through the CRI log writer: every
// line it writes must be "<RFC3339Nano> <stream> <P|F> <content>", no
// longer than MaxLineSize of content, and the contents must add up to the
// input exactly, with each full line's newline restored.
func FuzzWriter(f *testing.F) {
	f.Add([]byte("hello\nworld\n"), true)
	f.Add([]byte(""), false)
	f.Add([]byte("no newline"), true)
	f.Add([]byte("\n\n\r\n\x00\xff"), false)
	f.Add(bytes.Repeat([]byte("x"), MaxLineSize*2+3), true)
	f.Fuzz(func(t *testing.T, data []byte, stderr bool) {
		path := filepath.Join(t.TempDir(), "c.log")
		w, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		stream := Stdout
		if stderr {
			stream = Stderr
		}
		if err := w.Copy(stream, bytes.NewReader(data)); err != nil {
			t.Fatalf("Copy: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		out, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(make([]byte, 0, MaxLineSize*2), MaxLineSize*4)
		// Split on '\n' only: bufio.ScanLines would drop a '\r' the
		// container wrote.
		sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				return i + 1, data[:i], nil
			}
			if atEOF && len(data) > 0 {
				return len(data), data, nil
			}
			return 0, nil, nil
		})
		for sc.Scan() {
			parts := strings.SplitN(sc.Text(), " ", 4)
			if len(parts) != 4 {
				t.Fatalf("malformed log line %q", sc.Text())
			}
			if _, err := time.Parse(time.RFC3339Nano, parts[0]); err != nil {
				t.Fatalf("bad time in %q: %v", sc.Text(), err)
			}
			if parts[1] != string(stream) || (parts[2] != "P" && parts[2] != "F") {
				t.Fatalf("bad stream or tag in %q", sc.Text())
			}
			if len(parts[3]) > MaxLineSize {
				t.Fatalf("line content of %d bytes exceeds %d", len(parts[3]), MaxLineSize)
			}
			got.WriteString(parts[3])
			if parts[2] == "F" {
				got.WriteByte('\n')
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("log holds %d bytes of content for %d bytes of input, or different bytes", got.Len(), len(data))
		}
	})
}
