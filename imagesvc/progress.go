package imagesvc

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultProgressInterval is how often a long pull logs its progress.
const DefaultProgressInterval = 10 * time.Second

// progress is one pull's byte count, logged at a steady interval so an
// operator can tell a slow pull from a stuck one.
type progress struct {
	ref   string
	start time.Time

	mu     sync.Mutex
	layers map[digest.Digest]*layerProgress // guarded by mu
}

type layerProgress struct {
	size, done int64
}

func newProgress(ref string) *progress {
	return &progress{ref: ref, start: time.Now(), layers: map[digest.Digest]*layerProgress{}}
}

// plan records the layers to download: those not unpacked yet.
func (p *progress) plan(layers []ocispec.Descriptor, chains []digest.Digest, exists func(digest.Digest) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, l := range layers {
		if !exists(chains[i]) {
			p.layers[l.Digest] = &layerProgress{size: l.Size}
		}
	}
}

// add counts n bytes of layer d read (negative when a try is restarted).
func (p *progress) add(d digest.Digest, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.layers[d]; l != nil {
		l.done += n
	}
}

// complete marks layer d done, whoever (this pull or one it joined) did it.
func (p *progress) complete(d digest.Digest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.layers[d]; l != nil {
		l.done = l.size
	}
}

// snapshot returns bytes done and total, and layers done and total.
func (p *progress) snapshot() (done, total int64, layersDone, layers int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.layers {
		done += min(max(l.done, 0), l.size)
		total += l.size
		if l.done >= l.size {
			layersDone++
		}
	}
	return done, total, layersDone, len(p.layers)
}

// logProgress logs p every interval until the returned func is called.
func (s *Service) logProgress(ctx context.Context, p *progress) func() {
	if s.progressInterval <= 0 {
		return func() {}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(s.progressInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				done, total, ld, ln := p.snapshot()
				s.log.InfoContext(ctx, "pull progress", "ref", p.ref, "bytes_done", done, "bytes_total", total,
					"layers_done", ld, "layers_total", ln, "elapsed", time.Since(p.start).Round(time.Second).String())
			}
		}
	})
	return func() { close(stop); wg.Wait() }
}

// countingReader counts the bytes of one layer read from a registry.
type countingReader struct {
	r    io.Reader
	d    digest.Digest
	prog *progress // nil: not counted (a local blob)
	n    int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if c.prog != nil && n > 0 {
		c.prog.add(c.d, int64(n))
	}
	return n, err
}

// counted is what Read added to the progress.
func (c *countingReader) counted() int64 {
	if c.prog == nil {
		return 0
	}
	return c.n
}
