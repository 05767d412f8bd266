package streaming

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

func TestRequestedStreams(t *testing.T) {
	var store flagStore
	store.remember("http://127.0.0.1:1/attach/tok1", streamFlags{stdout: true})
	var got streamFlags
	var seen bool
	h := store.withFlags(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		got, seen = flagsFrom(r.Context())
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/attach/tok1", nil))
	if !seen || got != (streamFlags{stdout: true}) {
		t.Fatalf("flags = %+v, %v; want stdout only", got, seen)
	}
	first := got
	// A token is used once.
	seen = false
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/attach/tok1", nil))
	if seen {
		t.Error("flags found for a consumed token")
	}

	ctx := context.WithValue(context.Background(), flagsKey{}, first)
	in, out, errw := requested(ctx, strings.NewReader("x"), os.Stdout, os.Stderr)
	if in != nil || out == nil || errw != nil {
		t.Errorf("requested = %v, %v, %v; want only stdout kept", in, out, errw)
	}
	var w io.WriteCloser = os.Stdout
	in, out, errw = requested(context.Background(), strings.NewReader("x"), w, w)
	if in == nil || out == nil || errw == nil {
		t.Error("streams dropped without flags")
	}
}
