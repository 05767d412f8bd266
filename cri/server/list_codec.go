package server

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listed is a list item and, once an answer listing it has been encoded,
// its encoding, kept as long as the item is.
type listed[T proto.Message] struct {
	pb  T
	enc []byte
	// encoded says enc is set: an item may encode to no bytes.
	encoded bool
}

// Codec returns the gRPC codec berthd serves with. It encodes every
// message as gRPC's proto codec does, except the answers to
// ListPodSandbox and ListContainers: kubelet's PLEG asks for both every
// second and almost every item in them is the one listed the second
// before, so each item is encoded once, when first listed, and an answer
// is the concatenation of its items' encodings (BenchmarkRelistHandlers,
// 250 pods: encoding takes most of berthd's side of a relist). A repeated
// message field is encoded as one tagged, length-prefixed record per
// element, so the concatenation is the message's encoding.
func (s *Server) Codec() encoding.CodecV2 {
	return listCodec{items: &s.items, fallback: encoding.GetCodecV2(grpcproto.Name)}
}

type listCodec struct {
	items    *listItems
	fallback encoding.CodecV2
}

func (c listCodec) Name() string { return c.fallback.Name() }

func (c listCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.fallback.Unmarshal(data, v)
}

func (c listCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *runtime.ListPodSandboxResponse:
		if onlyItems(m) {
			return encodeItems(c.items, m.Items, func(l *listItems) *itemCache[*runtime.PodSandbox] { return &l.sandboxes }, (*runtime.PodSandbox).GetId)
		}
	case *runtime.ListContainersResponse:
		if onlyItems(m) {
			return encodeItems(c.items, m.Containers, func(l *listItems) *itemCache[*runtime.Container] { return &l.containers }, (*runtime.Container).GetId)
		}
	}
	return c.fallback.Marshal(v)
}

// itemsField is the field number of the items of both list answers.
const itemsField = 1

// onlyItems says m holds nothing but its items, so that encoding them is
// encoding m; a field added to the answer in a later CRI falls back to
// encoding the whole message.
func onlyItems(m proto.Message) bool {
	r := m.ProtoReflect()
	ok := len(r.GetUnknown()) == 0
	r.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		ok = ok && fd.Number() == itemsField
		return ok
	})
	return ok
}

// encodeItems encodes items as the repeated field itemsField, reusing the
// encoding kept for each item that is still the one cached under its ID
// and keeping the encodings it makes for those. The kept unfiltered answer
// (itemCache.all) is encoded once, and that encoding handed out again.
func encodeItems[T interface {
	comparable
	proto.Message
}](l *listItems, items []T, cache func(*listItems) *itemCache[T], id func(T) string) (mem.BufferSlice, error) {
	l.mu.Lock()
	c := cache(l)
	kept := sameSlice(c.all, items)
	if kept && c.allEnc != nil {
		enc := c.allEnc
		l.mu.Unlock()
		// Never written to, by gRPC or by berthd, and SliceBuffer's Free
		// does nothing: every answer can send the same bytes.
		return mem.BufferSlice{mem.SliceBuffer(enc)}, nil
	}
	// The kept answer's encoding is kept from its second sending on: while
	// records change before every relist each answer is sent once, and
	// its encoding is better made in gRPC's pool (BenchmarkRelistHandlers,
	// codec-changed: 0.23 ms a relist from the pool, 0.47 ms keeping each).
	keep := kept && c.allSent
	c.allSent = c.allSent || kept
	encs := make([][]byte, len(items))
	done := make([]bool, len(items))
	m := cache(l).byID
	missing := 0
	for i, it := range items {
		if e := m[id(it)]; e != nil && e.pb == it && e.encoded {
			encs[i], done[i] = e.enc, true
		} else {
			missing++
		}
	}
	l.mu.Unlock()

	if missing > 0 {
		for i, it := range items {
			if done[i] {
				continue
			}
			b, err := proto.Marshal(it)
			if err != nil {
				return nil, fmt.Errorf("encode list item %q: %w", id(it), err)
			}
			encs[i] = b
		}
		l.mu.Lock()
		m = cache(l).byID
		for i, it := range items {
			if e := m[id(it)]; !done[i] && e != nil && e.pb == it && !e.encoded {
				e.enc, e.encoded = encs[i], true
			}
		}
		l.mu.Unlock()
	}

	size := 0
	for _, b := range encs {
		size += protowire.SizeTag(itemsField) + protowire.SizeBytes(len(b))
	}
	appendItems := func(buf []byte) []byte {
		for _, b := range encs {
			buf = protowire.AppendTag(buf, itemsField, protowire.BytesType)
			buf = protowire.AppendBytes(buf, b)
		}
		return buf
	}
	if keep {
		enc := appendItems(make([]byte, 0, size))
		l.mu.Lock()
		if c := cache(l); sameSlice(c.all, items) && c.allEnc == nil {
			c.allEnc = enc
		}
		l.mu.Unlock()
		return mem.BufferSlice{mem.SliceBuffer(enc)}, nil
	}
	if mem.IsBelowBufferPoolingThreshold(size) {
		return mem.BufferSlice{mem.SliceBuffer(appendItems(make([]byte, 0, size)))}, nil
	}
	// From gRPC's pool, which takes the buffer back once the answer is
	// written, as its own proto codec does: a fresh answer (150 KiB for
	// 400 containers) every second is memory to allocate, clear and
	// collect on every relist.
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	*buf = appendItems((*buf)[:0])
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}
