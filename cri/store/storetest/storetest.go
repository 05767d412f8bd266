// Package storetest opens throwaway stores for the tests of the store's
// users.
package storetest

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/berth-runtime/berth/cri/store"
)

// Open returns an empty store in a test dir, closed when the test ends.
func Open(t testing.TB) *store.Store {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	st, err := store.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
