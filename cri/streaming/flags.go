package streaming

import (
	"context"
	"net/http"
	"path"
	"sync"
	"time"
)

// The library hands the Runtime a stdin reader and stderr writer even when
// the request did not ask for them (its WebSocket path always does), so an
// attach that only watches would read an immediate EOF on stdin and, with
// stdin_once, close the container's input. The server therefore remembers
// each session's requested streams by its URL token and drops the unwanted
// ones before the Runtime sees them.

// streamFlags are the streams a session asked for.
type streamFlags struct{ stdin, stdout, stderr bool }

// flagsTTL outlives the library's own token lifetime (one minute).
const flagsTTL = 2 * time.Minute

type flagsEntry struct {
	f       streamFlags
	expires time.Time
}

// flagStore maps URL tokens to their sessions' flags.
type flagStore struct {
	mu sync.Mutex
	m  map[string]flagsEntry // guarded by mu
}

func (s *flagStore) remember(url string, f streamFlags) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]flagsEntry{}
	}
	for k, e := range s.m {
		if now.After(e.expires) {
			delete(s.m, k)
		}
	}
	s.m[path.Base(url)] = flagsEntry{f: f, expires: now.Add(flagsTTL)}
}

func (s *flagStore) take(token string) (streamFlags, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[token]
	delete(s.m, token)
	return e.f, ok
}

type flagsKey struct{}

// withFlags serves next with the session's flags in the request context.
func (s *flagStore) withFlags(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f, ok := s.take(path.Base(r.URL.Path)); ok {
			r = r.WithContext(context.WithValue(r.Context(), flagsKey{}, f))
		}
		next.ServeHTTP(w, r)
	})
}

func flagsFrom(ctx context.Context) (streamFlags, bool) {
	f, ok := ctx.Value(flagsKey{}).(streamFlags)
	return f, ok
}
