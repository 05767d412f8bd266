package reference

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
)

// FuzzParse: Parse never panics, refuses only with InvalidArgument, and
// what it accepts prints as a reference that parses back to itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"busybox", "library/busybox:1", "docker.io/library/busybox:latest", "127.0.0.1:5000/a/b:c",
		"a@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"", "UPPER/case", "a:b:c", "bad ref", "-x", "a//b", "localhost:99999/x", "[::1]:5000/x:y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Parse(%q): %v is not InvalidArgument", s, err)
			}
			return
		}
		again, err := Parse(r.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %q, which does not parse: %v", s, r.String(), err)
		}
		if again != r {
			t.Fatalf("Parse(%q) = %+v, but its String %q parses to %+v", s, r, r.String(), again)
		}
	})
}
