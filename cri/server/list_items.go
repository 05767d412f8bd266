package server

import "google.golang.org/protobuf/proto"

// walkItems lists, as items, the records each walks that keep accepts
// (every record when all is set). A record's cached item is reused while
// current says it still shows the record, else build makes a new one, so
// an unchanged record keeps its item and the item its encoding (Codec). A
// walk of every record replaces the cache, dropping the items of removed
// records; a filtered walk only reads it. The caller holds listItems.mu.
func walkItems[R any, T proto.Message](cache *map[string]*listed[T], all bool,
	each func(func(*R)), id func(*R) string, keep func(*R) bool,
	current func(T, *R) bool, build func(*R) T) []T {
	prev := *cache
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
		*cache = next
	}
	return out
}
