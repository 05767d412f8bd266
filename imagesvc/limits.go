package imagesvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// Defaults of Limits. The progress timeout is containerd's
// image_pull_progress_timeout; 4 MiB is what containerd, containers/image
// and the distribution registry allow a manifest; 128 layers is moby's
// limit; 128 MiB is the largest zstd window the zstd CLI accepts unasked.
const (
	DefaultProgressTimeout = 5 * time.Minute
	DefaultMaxLayers       = 128
	DefaultMaxManifestSize = 4 << 20
	DefaultMaxConfigSize   = 8 << 20
	DefaultMaxZstdWindow   = 128 << 20
	DefaultMaxUnpackedSize = 64 << 30
)

// Limits bound what one pull may take from the node: berthd's memory is
// the node's (it runs at OOMScoreAdjust=-999), its download slots are
// shared by every pull, and its disk holds every image. A zero field
// takes its default.
type Limits struct {
	// ProgressTimeout cancels a registry request that receives less than
	// progressChunk bytes in this long (negative: never), freeing its
	// download slot for other pulls.
	ProgressTimeout time.Duration
	// MaxLayers is the most layers an image may have; more are refused
	// before anything is downloaded.
	MaxLayers int
	// MaxManifestSize bounds a manifest or index read into memory.
	MaxManifestSize int64
	// MaxConfigSize bounds an image config read into memory.
	MaxConfigSize int64
	// MaxZstdWindow bounds the window (history kept in memory) a zstd
	// layer may ask its decoder for.
	MaxZstdWindow int64
	// MaxUnpackedSize bounds what one pull unpacks onto disk: tar headers
	// (512 bytes per entry) plus file contents, over all its layers.
	MaxUnpackedSize int64
}

func (l Limits) withDefaults() Limits {
	set := func(v *int64, def int64) {
		if *v <= 0 {
			*v = def
		}
	}
	if l.ProgressTimeout == 0 {
		l.ProgressTimeout = DefaultProgressTimeout
	}
	if l.MaxLayers <= 0 {
		l.MaxLayers = DefaultMaxLayers
	}
	set(&l.MaxManifestSize, DefaultMaxManifestSize)
	set(&l.MaxConfigSize, DefaultMaxConfigSize)
	set(&l.MaxZstdWindow, DefaultMaxZstdWindow)
	set(&l.MaxUnpackedSize, DefaultMaxUnpackedSize)
	return l
}

// progressChunk is what a request must receive per ProgressTimeout to
// count as progressing: any single byte would let a registry trickling a
// byte a minute hold a download slot for ever.
const progressChunk = 32 << 10

// limitTransport bounds every request of a pull: a request that stops
// making progress is cancelled with a clear error, and a manifest larger
// than allowed is refused before it is read into memory.
type limitTransport struct {
	base        http.RoundTripper
	timeout     time.Duration // <= 0: no progress timeout
	maxManifest int64
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	manifest := strings.Contains(req.URL.Path, "/manifests/")
	if t.timeout <= 0 {
		resp, err := t.base.RoundTrip(req)
		if err == nil && manifest {
			err = t.capManifest(resp)
		}
		return resp, err
	}
	ctx, cancel := context.WithCancel(req.Context())
	w := &watchdog{timeout: t.timeout, cancel: cancel, host: req.URL.Host}
	w.timer = time.AfterFunc(t.timeout, w.fire)
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		w.stop()
		if w.fired() {
			return nil, w.err()
		}
		return nil, err
	}
	resp.Body = &watchedBody{rc: resp.Body, w: w}
	if manifest {
		if err := t.capManifest(resp); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// capManifest refuses a manifest over the limit by its Content-Length,
// and cuts one that lies about it off at the limit.
func (t *limitTransport) capManifest(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	if resp.ContentLength > t.maxManifest {
		resp.Body.Close()
		return manifestTooLarge(resp.ContentLength, t.maxManifest)
	}
	resp.Body = &cappedBody{rc: resp.Body, left: t.maxManifest, limit: t.maxManifest}
	return nil
}

// manifestTooLarge reports a manifest over limit; size < 0: not known.
func manifestTooLarge(size, limit int64) error {
	if size < 0 {
		return fmt.Errorf("manifest is over the %d byte limit: %w", limit, errdefs.ErrResourceExhausted)
	}
	return fmt.Errorf("manifest is %d bytes, over the %d byte limit: %w", size, limit, errdefs.ErrResourceExhausted)
}

type cappedBody struct {
	rc          io.ReadCloser
	left, limit int64
}

func (c *cappedBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// one byte past the limit tells a body at the limit from one over it.
		var one [1]byte
		n, err := c.rc.Read(one[:])
		if n > 0 {
			return 0, manifestTooLarge(-1, c.limit)
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cappedBody) Close() error { return c.rc.Close() }

// watchdog cancels a request that receives less than progressChunk bytes
// in timeout.
type watchdog struct {
	timeout time.Duration
	cancel  context.CancelFunc
	host    string
	timer   *time.Timer

	mu      sync.Mutex
	since   int64 // bytes since the timer was last reset; guarded by mu
	expired bool  // guarded by mu
}

func (w *watchdog) fire() {
	w.mu.Lock()
	w.expired = true
	w.mu.Unlock()
	w.cancel()
}

func (w *watchdog) fired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.expired
}

func (w *watchdog) read(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.since += int64(n); w.since >= progressChunk && !w.expired {
		w.since = 0
		w.timer.Reset(w.timeout)
	}
}

func (w *watchdog) stop() {
	w.timer.Stop()
	w.cancel()
}

func (w *watchdog) err() error {
	return fmt.Errorf("registry %s sent under %d KiB in %s, the pull progress timeout: %w",
		w.host, progressChunk>>10, w.timeout, context.DeadlineExceeded)
}

type watchedBody struct {
	rc io.ReadCloser
	w  *watchdog
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.w.read(n)
	}
	if err != nil && !errors.Is(err, io.EOF) && b.w.fired() {
		err = b.w.err()
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.w.stop()
	return b.rc.Close()
}
