package imagesvc

import (
	"context"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A restart finds the buckets and commits nothing for them: no bbolt
// commit (its fdatasyncs) before berthd serves.
func TestNewOnExistingStoreCommitsNothing(t *testing.T) {
	root := t.TempDir()
	db, err := bolt.Open(filepath.Join(root, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	txid := func() (id int) {
		if err := db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
			t.Fatal(err)
		}
		return id
	}
	opts := Options{Root: filepath.Join(root, "berth"), DB: db}
	first := txid()
	if _, err := New(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if txid() == first {
		t.Fatal("the first New created no buckets")
	}
	before := txid()
	if _, err := New(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if after := txid(); after != before {
		t.Errorf("New on an existing store committed %d transactions, want none", after-before)
	}
}
