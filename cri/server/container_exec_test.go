package server

import (
	"bytes"
	"testing"
)

func TestCappedBuffer(t *testing.T) {
	tests := []struct {
		name            string
		limit           int
		out, err        []string
		wantOut, wantEr string
	}{
		{"under the limit", 10, []string{"abc"}, []string{"de"}, "abc", "de"},
		{"stdout fills it", 4, []string{"abcdef"}, []string{"xy"}, "abcd", ""},
		{"shared between streams", 5, []string{"abc", "def"}, []string{"xy", "z"}, "abc", "xy"},
		{"nothing kept at zero", 0, []string{"a"}, []string{"b"}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := &cappedBuffer{limit: tc.limit}
			errb := &cappedBuffer{limit: tc.limit, shared: out}
			out.shared = errb
			// Interleave as two copiers would.
			for i := 0; i < max(len(tc.out), len(tc.err)); i++ {
				for _, w := range []struct {
					b *cappedBuffer
					s []string
				}{{out, tc.out}, {errb, tc.err}} {
					if i < len(w.s) {
						n, err := w.b.Write([]byte(w.s[i]))
						if err != nil || n != len(w.s[i]) {
							t.Fatalf("Write = %d, %v; want %d, nil (output past the cap is dropped, not refused)", n, err, len(w.s[i]))
						}
					}
				}
			}
			if !bytes.Equal(out.Bytes(), []byte(tc.wantOut)) || !bytes.Equal(errb.Bytes(), []byte(tc.wantEr)) {
				t.Errorf("kept %q / %q, want %q / %q", out.Bytes(), errb.Bytes(), tc.wantOut, tc.wantEr)
			}
		})
	}
}
