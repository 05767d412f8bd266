package server

import (
	"sync"

	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listItems keeps the list item last made for each sandbox and container.
// kubelet's PLEG lists every sandbox and container each second, and an
// item depends only on the part of a record that never changes and on its
// state, so a relist makes items only for records made or changed since
// the one before (BenchmarkRelistHandlers), and the codec (Codec)
// encodes an item only once. An item is shared by every answer
// that lists it and never changed once made. A list without a filter
// replaces the maps, which drops removed records; a filtered one only
// reads them.
//
// Most relists find nothing changed at all, so the last unfiltered answer
// of each list is kept too, with the generations of the records and of the
// set of objects being created it was made at, and handed out again, as
// is, while both are unchanged; the codec keeps its encoding.
type listItems struct {
	mu         sync.Mutex
	sandboxes  itemCache[*runtime.PodSandbox]
	containers itemCache[*runtime.Container]
}

// itemCache is what listItems keeps of one list.
type itemCache[T proto.Message] struct {
	byID map[string]*listed[T]
	// all is the last unfiltered answer, made when the records and the
	// in-flight set were at key; shared by every answer and never changed.
	all  []T
	key  listKey
	made bool
	// allSent says all was encoded for an answer, allEnc is its encoding
	// once it was encoded for a second one (encodeItems).
	allSent bool
	allEnc  []byte
}

// listKey is what an unfiltered answer depends on: the generation of its
// records (store.Generations) and of the in-flight set (inFlight.version).
type listKey struct{ records, creating uint64 }

// answer returns list's answer. An unfiltered one (all) is the kept
// answer when that was made at key, else the one list makes, which is
// kept. The caller holds listItems.mu; key is read before list walks the
// records, so a change in between makes the kept answer newer than its
// key, never older, and the next call only makes it again.
func (c *itemCache[T]) answer(all bool, key func() listKey, list func() []T) []T {
	if !all {
		return list()
	}
	k := key()
	if c.made && c.key == k {
		return c.all
	}
	c.all, c.key, c.made, c.allSent, c.allEnc = list(), k, true, false, nil
	return c.all
}

// sameSlice says a and b are the same non-empty slice.
func sameSlice[T any](a, b []T) bool {
	return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0]
}

// walkItems lists, as items, the records each walks that keep accepts
// (every record when all is set). A record's cached item is reused while
// current says it still shows the record, else build makes a new one, so
// an unchanged record keeps its item and the item its encoding (Codec). A
// walk of every record replaces the cache, dropping the items of removed
// records; a filtered walk only reads it. The caller holds listItems.mu.
func walkItems[R any, T proto.Message](cache *itemCache[T], all bool,
	each func(func(*R)), id func(*R) string, keep func(*R) bool,
	current func(T, *R) bool, build func(*R) T) []T {
	prev := cache.byID
	var next map[string]*listed[T]
	if all {
		next = make(map[string]*listed[T], len(prev))
	}
	var out []T
	each(func(r *R) {
		if !all && !keep(r) {
			return
		}
		k := id(r)
		item := prev[k]
		if item == nil || !current(item.pb, r) {
			item = &listed[T]{pb: build(r)}
		}
		if all {
			next[k] = item
		}
		out = append(out, item.pb)
	})
	if all {
		cache.byID = next
	}
	return out
}
