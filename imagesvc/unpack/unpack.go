// Package unpack owns turning a layer's tar stream into a directory that
// overlayfs can use as a lower layer: safe extraction of hostile input (no
// entry may land outside the directory) and OCI whiteouts converted to
// overlayfs ones. It is berth's one tar reader and one decompressor: image
// load archives, checkpoint archives, rootfs diffs and volume archives
// go through Extract too, with Options for what each takes.
// Requires Linux >= 5.6 (openat2).
package unpack

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	paxXattr       = "SCHILY.xattr."
	// OpaqueXattr marks an overlayfs directory whose lower contents are hidden.
	OpaqueXattr = "trusted.overlay.opaque"
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Option bounds what Decompress and Apply take from a hostile layer.
type Option func(*options) error

type options struct {
	maxWindow uint64  // 0: zstd's own default (512 MiB)
	budget    *Budget // nil: unbounded
}

// WithMaxWindow refuses zstd frames whose window (the history a decoder
// must keep in memory) is over n bytes. The zstd CLI refuses windows over
// 128 MiB unless told otherwise; the library's default is 512 MiB.
func WithMaxWindow(n uint64) Option {
	return func(o *options) error {
		if n < zstd.MinWindowSize {
			return fmt.Errorf("zstd window limit %d is under the format's minimum %d: %w", n, zstd.MinWindowSize, errdefs.ErrInvalidArgument)
		}
		o.maxWindow = n
		return nil
	}
}

// WithBudget charges what Apply extracts to b.
func WithBudget(b *Budget) Option {
	return func(o *options) error {
		if b == nil {
			return fmt.Errorf("nil unpack budget: %w", errdefs.ErrInvalidArgument)
		}
		o.budget = b
		return nil
	}
}

func applyOptions(opts []Option) (options, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// Budget is how much several layers may unpack together (the layers of
// one image), shared by the goroutines that unpack them. Each entry costs
// a tar header block (512 bytes) plus a regular file's size, charged
// before the file is written: a header claiming terabytes (a sparse file,
// or a lie) is refused before a byte of it lands on disk, and a flood of
// empty entries is counted too.
type Budget struct {
	limit  int64
	used   atomic.Int64
	parent *Budget // of a Sub budget
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// Sub returns a budget that charges b and can give back what it charged:
// one try at a layer, so a retried download is not counted twice.
func (b *Budget) Sub() *Budget {
	if b == nil {
		return nil
	}
	if b.parent != nil {
		b = b.parent
	}
	return &Budget{limit: b.limit, parent: b}
}

// Release gives back to the parent what a Sub budget charged.
func (b *Budget) Release() {
	if b != nil && b.parent != nil {
		b.parent.used.Add(-b.used.Swap(0))
	}
}

func (b *Budget) charge(n int64) error {
	if b == nil {
		return nil
	}
	top := b
	if b.parent != nil {
		top = b.parent
	}
	over := func() error {
		return fmt.Errorf("image unpacks to more than %d bytes (unpacked size limit): %w", top.limit, errdefs.ErrResourceExhausted)
	}
	// n is bounded first, so the sum cannot overflow.
	if n < 0 || n > top.limit {
		return over()
	}
	if top != b {
		b.used.Add(n)
	}
	if top.used.Add(n) > top.limit {
		return over()
	}
	return nil
}

// Decompress returns the uncompressed stream of a layer blob, detecting gzip,
// zstd or plain tar by magic bytes (media types are not always truthful).
func Decompress(r io.Reader, opts ...Option) (io.ReadCloser, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read layer header: %w", err)
	}
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("open gzip layer: %w", err)
		}
		return zr, nil
	case bytes.HasPrefix(magic, zstdMagic):
		zopts := []zstd.DOption{zstd.WithDecoderConcurrency(1)}
		if o.maxWindow > 0 {
			// MaxMemory too: a single-segment frame has no window
			// descriptor, its content size is the window, checked
			// against MaxMemory only.
			zopts = append(zopts, zstd.WithDecoderMaxWindow(o.maxWindow), zstd.WithDecoderMaxMemory(o.maxWindow))
		}
		zr, err := zstd.NewReader(br, zopts...)
		if err != nil {
			return nil, fmt.Errorf("open zstd layer: %w", err)
		}
		return &zstdReader{rc: zr.IOReadCloser(), max: o.maxWindow}, nil
	default:
		return io.NopCloser(br), nil
	}
}

// zstdReader tells a window over the limit apart from a corrupt stream.
type zstdReader struct {
	rc  io.ReadCloser
	max uint64
}

func (z *zstdReader) Read(p []byte) (int, error) {
	n, err := z.rc.Read(p)
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		err = fmt.Errorf("zstd layer needs a window over the %d byte limit: %w: %w", z.max, err, errdefs.ErrResourceExhausted)
	}
	return n, err
}

func (z *zstdReader) Close() error { return z.rc.Close() }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

// Apply extracts the image layer tar stream r into the existing directory
// dir: Extract with whiteouts, xattrs and device nodes, as a layer needs.
// opts bound what it takes (WithBudget).
func Apply(ctx context.Context, dir string, r io.Reader, log *slog.Logger, opts ...Option) error {
	o, err := applyOptions(opts)
	if err != nil {
		return err
	}
	return Extract(ctx, dir, r, Options{Whiteouts: true, Xattrs: true, Devices: true, Logger: log, Budget: o.budget})
}

// Options say what Extract takes from a stream besides names, contents,
// owners (when running as root), modes and times.
type Options struct {
	// Whiteouts turns OCI whiteouts into overlayfs ones (image layers);
	// without it a ".wh." name is an ordinary file.
	Whiteouts bool
	// Xattrs sets the entries' SCHILY.xattr records (never overlay's own).
	Xattrs bool
	// Devices creates device nodes when running as root (skipped
	// otherwise); without it a device entry is refused: a tar that is not
	// a layer has no business putting one in a directory of the host.
	Devices bool
	// FilesOnly takes directories and regular files only: a symlink,
	// hardlink, device node or FIFO is refused, as is any other type. For
	// a tar whose members the caller itself opens or hands to a tool
	// running as root (a checkpoint archive), where a link could make a
	// name mean a file elsewhere on the host.
	FilesOnly bool
	// FlatLinks, with FilesOnly, takes symlinks and hardlinks too, each
	// made a hard link to the entry its target names inside dir (a
	// symlink's relative target read from the symlink's own directory, an
	// absolute one from dir); a target outside dir is refused. For
	// an archive whose files the caller opens by name (docker save before
	// 25 links identical layer.tar files): no name can lead out of dir.
	FlatLinks bool
	// Private ignores the entries' owners, modes and times: files are
	// made 0600 and directories 0700, owned by the extracting user. For an
	// archive only berth reads, and throws away (image load).
	Private bool
	// MaxEntries refuses a stream of more than this many entries (a
	// hostile tar full of empty entries must not exhaust inodes); 0: no
	// limit.
	MaxEntries int
	// StreamIsInput says r is the whole input, not a download that can
	// fail on its own (a file): an error that is neither a system call's
	// nor ctx's (a malformed or truncated stream) is then the input's
	// fault, wrapped with errdefs.ErrInvalidArgument.
	StreamIsInput bool
	Logger        *slog.Logger // nil => slog.Default()
	// Budget is charged what is extracted; nil: unbounded.
	Budget *Budget
}

// Extract extracts the tar stream r into the existing directory dir.
// Entries are created with *at syscalls relative to dir; parents are
// resolved with RESOLVE_IN_ROOT, so symlinks inside the tree can never lead
// outside it. Paths that escape dir (absolute, "..") and hardlinks whose
// target escapes are rejected with errdefs.ErrInvalidArgument; runs of zero
// blocks become holes. The "./" entry is checked but never applied: dir's
// own owner and mode are its creator's, and a tar must not widen them (a
// 0777 or foreign-owned root) nor hide the tree from the users that must
// traverse it. Existing entries are replaced; an existing directory keeps
// its contents. On error dir is left partly written: the caller removes it.
func Extract(ctx context.Context, dir string, r io.Reader, o Options) error {
	err := extract(ctx, dir, r, o)
	if err != nil && o.StreamIsInput && !errdefs.IsInvalidArgument(err) && ctx.Err() == nil {
		var errno unix.Errno
		if !errors.As(err, &errno) {
			return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	return err
}

func extract(ctx context.Context, dir string, r io.Reader, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	rootfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open dir %q: %w", dir, err)
	}
	defer unix.Close(rootfd)
	e := &extractor{rootfd: rootfd, log: o.Logger, chown: unix.Geteuid() == 0, opts: o, budget: o.Budget}
	tr := tar.NewReader(r)
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if o.MaxEntries > 0 && n > o.MaxEntries {
			return fmt.Errorf("more than %d entries: %w", o.MaxEntries, errdefs.ErrInvalidArgument)
		}
		cost := int64(512)
		if hdr.Typeflag == tar.TypeReg { // the reader turns a legacy TypeRegA into TypeReg
			cost += hdr.Size
		}
		if err := e.budget.charge(cost); err != nil {
			return fmt.Errorf("extract %q: %w", hdr.Name, err)
		}
		if err := e.entry(hdr, tr); err != nil {
			return fmt.Errorf("extract %q: %w", hdr.Name, err)
		}
	}
	return e.finishDirs()
}

// Remove deletes name (a path relative to dir; a leading "/" means dir) and
// everything below it, resolving its parents as Extract does, so a symlink
// in the tree cannot point the removal outside dir. A missing entry or
// parent is fine; dir itself is never removed.
func Remove(dir, name string) error {
	name, err := cleanName("./" + strings.TrimLeft(name, "/"))
	if err != nil {
		return err
	}
	if name == "." {
		return nil
	}
	rootfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open dir %q: %w", dir, err)
	}
	defer unix.Close(rootfd)
	e := &extractor{rootfd: rootfd}
	pdir, base := path.Split(name)
	parent, err := e.openDir(path.Clean("./"+pdir), false)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	return removeAt(parent, base)
}

type dirTime struct {
	name string
	hdr  *tar.Header
}

type extractor struct {
	rootfd int
	log    *slog.Logger
	chown  bool
	opts   Options
	dirs   []dirTime
	budget *Budget // nil: unbounded
}

// cleanName makes a tar path relative to the layer root, or rejects it.
func cleanName(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("path %q is empty or absolute: %w", name, errdefs.ErrInvalidArgument)
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("path %q escapes the layer: %w", name, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

func (e *extractor) entry(hdr *tar.Header, tr io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := path.Split(name)
	dir = path.Clean("./" + dir)
	if e.opts.Whiteouts && strings.HasPrefix(base, whiteoutPrefix) {
		return e.whiteout(dir, base)
	}
	if name == "." {
		// dir's owner and mode are its creator's (see Extract).
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("root entry is not a directory: %w", errdefs.ErrInvalidArgument)
		}
		return nil
	}
	if e.opts.FilesOnly {
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeReg, tar.TypeXGlobalHeader:
		case tar.TypeSymlink, tar.TypeLink:
			if e.opts.FlatLinks {
				break
			}
			fallthrough
		default:
			return fmt.Errorf("entry of type %s: only directories and regular files are taken: %w", typeName(hdr.Typeflag), errdefs.ErrInvalidArgument)
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	case tar.TypeChar, tar.TypeBlock:
		if !e.opts.Devices {
			return fmt.Errorf("device node %d:%d: %w", hdr.Devmajor, hdr.Devminor, errdefs.ErrInvalidArgument)
		}
		if hdr.Typeflag == tar.TypeChar && hdr.Devmajor == 0 && hdr.Devminor == 0 {
			// overlayfs reads a 0:0 character device as a whiteout: only
			// .wh. entries may delete lower files.
			e.log.Warn("skipping 0:0 character device in layer", "path", name)
			return nil
		}
		if !e.chown {
			// only root may mknod; unprivileged unpacking (tests) skips them.
			e.log.Warn("skipping device node in layer", "path", name, "major", hdr.Devmajor, "minor", hdr.Devminor)
			return nil
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		e.log.Warn("skipping unsupported tar entry", "path", name, "type", string(hdr.Typeflag))
		return nil
	}
	parent, err := e.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if hdr.Typeflag == tar.TypeDir {
		if err := e.ensureDir(parent, base); err != nil {
			return err
		}
		return e.dir(name, hdr)
	}
	if err := removeAt(parent, base); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		if e.opts.FlatLinks {
			return e.hardlink(parent, base, symlinkTarget(dir, hdr.Linkname))
		}
		if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
	case tar.TypeLink:
		return e.hardlink(parent, base, hdr.Linkname)
	case tar.TypeFifo:
		if err := unix.Mknodat(parent, base, unix.S_IFIFO|uint32(hdr.Mode&0o7777), 0); err != nil {
			return fmt.Errorf("mkfifo: %w", err)
		}
	case tar.TypeChar, tar.TypeBlock:
		// a device node in a layer is no escape: the container's device
		// cgroup decides whether it can be opened.
		typ := uint32(unix.S_IFCHR)
		if hdr.Typeflag == tar.TypeBlock {
			typ = unix.S_IFBLK
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(parent, base, typ|uint32(hdr.Mode&0o7777), int(dev)); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		if err := unix.Fchmodat(parent, base, uint32(hdr.Mode&0o7777), 0); err != nil {
			return fmt.Errorf("chmod device: %w", err)
		}
	default:
		return e.regular(parent, base, hdr, tr)
	}
	return e.attrsAt(parent, base, hdr)
}

// symlinkTarget is the name, relative to the root, of what a symlink in
// dir to linkname names when read inside the root: a relative target from
// dir, an absolute one from the root (as RESOLVE_IN_ROOT reads it). A
// target that climbs out stays out, for hardlink to refuse.
func symlinkTarget(dir, linkname string) string {
	if path.IsAbs(linkname) {
		return path.Clean("." + linkname)
	}
	return path.Clean(path.Join(dir, linkname))
}

// typeName names a tar entry type for an error.
func typeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("%q", t)
}

// openDir opens dir (relative, clean) resolved inside the root, creating
// missing components when create is set.
func (e *extractor) openDir(dir string, create bool) (int, error) {
	how := &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	fd, err := unix.Openat2(e.rootfd, dir, how)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		if err != nil {
			return -1, fmt.Errorf("open dir %q in layer: %w", dir, err)
		}
		return fd, nil
	}
	cur := "."
	for _, c := range strings.Split(dir, "/") {
		next := path.Join(cur, c)
		fd, err = unix.Openat2(e.rootfd, next, how)
		if errors.Is(err, unix.ENOENT) {
			pfd, perr := unix.Openat2(e.rootfd, cur, how)
			if perr != nil {
				return -1, fmt.Errorf("open dir %q in layer: %w", cur, perr)
			}
			merr := unix.Mkdirat(pfd, c, e.dirMode())
			unix.Close(pfd)
			if merr != nil && !errors.Is(merr, unix.EEXIST) {
				return -1, fmt.Errorf("mkdir %q in layer: %w", next, merr)
			}
			fd, err = unix.Openat2(e.rootfd, next, how)
		}
		if err != nil {
			return -1, fmt.Errorf("open dir %q in layer: %w", next, err)
		}
		if next != dir {
			unix.Close(fd)
		}
		cur = next
	}
	return fd, nil
}

// dirMode is the mode a directory is made with before its entry's own
// mode, if any, is applied.
func (e *extractor) dirMode() uint32 {
	if e.opts.Private {
		return 0o700
	}
	return 0o755
}

// ensureDir makes parent/base a directory, replacing any non-directory.
func (e *extractor) ensureDir(parent int, base string) error {
	var st unix.Stat_t
	err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil
	}
	if err == nil {
		if err := removeAt(parent, base); err != nil {
			return err
		}
	}
	if err := unix.Mkdirat(parent, base, e.dirMode()); err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	return nil
}

// dir applies a directory entry's attributes; times are set at the end,
// after its children stop changing them.
func (e *extractor) dir(name string, hdr *tar.Header) error {
	fd, err := e.openDir(name, false)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := e.ownerMode(fd, hdr); err != nil {
		return err
	}
	e.xattrs(fd, name, hdr)
	if !e.opts.Private {
		e.dirs = append(e.dirs, dirTime{name: name, hdr: hdr})
	}
	return nil
}

func (e *extractor) regular(parent int, base string, hdr *tar.Header, tr io.Reader) error {
	fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create file: %w", err)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	w := &fdWriter{fd: fd}
	var n int64
	n, err = io.CopyBuffer(w, io.LimitReader(tr, hdr.Size), *bp)
	if err == nil && n != hdr.Size {
		err = fmt.Errorf("file is %d bytes, header says %d: %w", n, hdr.Size, io.ErrUnexpectedEOF)
	}
	if err == nil && w.hole {
		// the file ends in a hole that was skipped, not written.
		err = unix.Ftruncate(fd, hdr.Size)
	}
	if err == nil {
		err = e.ownerMode(fd, hdr)
	}
	if err == nil {
		e.xattrs(fd, hdr.Name, hdr)
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write file: %w", err)
	}
	if e.opts.Private {
		return nil
	}
	return setTimes(parent, base, hdr)
}

func (e *extractor) hardlink(parent int, base, linkname string) error {
	target, err := cleanName(linkname)
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	if target == "." {
		return fmt.Errorf("hardlink to layer root: %w", errdefs.ErrInvalidArgument)
	}
	tdir, tbase := path.Split(target)
	tparent, err := e.openDir(path.Clean("./"+tdir), false)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", linkname, err)
	}
	defer unix.Close(tparent)
	// flags 0: never follow a symlink target, link the symlink itself.
	if err := unix.Linkat(tparent, tbase, parent, base, 0); err != nil {
		return fmt.Errorf("hardlink to %q: %w", linkname, err)
	}
	return nil
}

func (e *extractor) whiteout(dir, base string) error {
	switch {
	case base == whiteoutOpaque:
		fd, err := e.openDir(dir, true)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Fsetxattr(fd, OpaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("mark %q opaque: %w", dir, err)
		}
		return nil
	case strings.HasPrefix(base, whiteoutMeta):
		return nil // aufs bookkeeping (.wh..wh.plnk etc.), meaningless here
	}
	victim := strings.TrimPrefix(base, whiteoutPrefix)
	if victim == "" || victim == "." || victim == ".." {
		return fmt.Errorf("bad whiteout %q: %w", base, errdefs.ErrInvalidArgument)
	}
	parent, err := e.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if err := removeAt(parent, victim); err != nil {
		return err
	}
	// overlayfs whiteout: a 0:0 character device.
	if err := unix.Mknodat(parent, victim, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("create whiteout for %q: %w", path.Join(dir, victim), err)
	}
	return nil
}

func (e *extractor) ownerMode(fd int, hdr *tar.Header) error {
	if e.opts.Private {
		mode := uint32(0o600)
		if hdr.Typeflag == tar.TypeDir {
			mode = 0o700
		}
		if err := unix.Fchmod(fd, mode); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
		return nil
	}
	if e.chown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	// after chown, which clears setuid/setgid bits.
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// attrsAt sets owner, mode and times of a symlink or fifo without following it.
func (e *extractor) attrsAt(parent int, base string, hdr *tar.Header) error {
	if e.opts.Private {
		if hdr.Typeflag == tar.TypeFifo {
			if err := unix.Fchmodat(parent, base, 0o600, 0); err != nil {
				return fmt.Errorf("chmod fifo: %w", err)
			}
		}
		return nil
	}
	if e.chown {
		if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("lchown: %w", err)
		}
	}
	if hdr.Typeflag == tar.TypeFifo {
		if err := unix.Fchmodat(parent, base, uint32(hdr.Mode&0o7777), 0); err != nil {
			return fmt.Errorf("chmod fifo: %w", err)
		}
	}
	return setTimes(parent, base, hdr)
}

// xattrs sets extended attributes where the filesystem allows; overlay's own
// attributes from a layer could redirect lookups, so they are never taken.
func (e *extractor) xattrs(fd int, name string, hdr *tar.Header) {
	if !e.opts.Xattrs {
		return
	}
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, paxXattr)
		if !ok {
			continue
		}
		if strings.HasPrefix(attr, "trusted.overlay.") {
			e.log.Warn("ignoring overlay xattr in layer", "path", name, "xattr", attr)
			continue
		}
		if err := unix.Fsetxattr(fd, attr, []byte(v), 0); err != nil {
			e.log.Debug("cannot set xattr", "path", name, "xattr", attr, "error", err)
		}
	}
}

func (e *extractor) finishDirs() error {
	for i := len(e.dirs) - 1; i >= 0; i-- {
		d := e.dirs[i]
		fd, err := e.openDir(d.name, false)
		if err != nil {
			return err
		}
		err = setTimes(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), d.hdr)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

func setTimes(dirfd int, name string, hdr *tar.Header) error {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	flags := unix.AT_SYMLINK_NOFOLLOW
	if dirfd == unix.AT_FDCWD {
		flags = 0 // a /proc/self/fd magic link to an already opened dir
	}
	if err := unix.UtimesNanoAt(dirfd, name, ts, flags); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// removeAt removes parent/base whatever it is; a missing entry is fine.
func removeAt(parent int, base string) error {
	err := unix.Unlinkat(parent, base, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("remove %q: %w", base, err)
	}
	if err := unix.Unlinkat(parent, base, unix.AT_REMOVEDIR); err == nil {
		return nil
	}
	fd, err := unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %q for removal: %w", base, err)
	}
	err = removeChildren(fd)
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(parent, base, unix.AT_REMOVEDIR); err != nil {
		return fmt.Errorf("remove dir %q: %w", base, err)
	}
	return nil
}

func removeChildren(dirfd int) error {
	dup, err := unix.Dup(dirfd)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("read dir for removal: %w", err)
	}
	for _, n := range names {
		if err := removeAt(dirfd, n); err != nil {
			return err
		}
	}
	return nil
}

// holeBlock is the granularity of hole detection: whole zero blocks are
// skipped with lseek, so sparse files (and zero-filled ones) stay sparse.
const holeBlock = 4096

var zeroBlock [holeBlock]byte

// fdWriter writes a file, leaving holes where whole blocks are zero.
type fdWriter struct {
	fd   int
	hole bool // the last block was skipped: the file needs its size set
}

func (w *fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		chunk := p[n:min(len(p), n+holeBlock)]
		if len(chunk) == holeBlock && bytes.Equal(chunk, zeroBlock[:]) {
			if _, err := unix.Seek(w.fd, holeBlock, io.SeekCurrent); err != nil {
				return n, err
			}
			w.hole = true
			n += holeBlock
			continue
		}
		if err := w.writeAll(chunk); err != nil {
			return n, err
		}
		w.hole = false
		n += len(chunk)
	}
	return n, nil
}

func (w *fdWriter) writeAll(p []byte) error {
	for len(p) > 0 {
		m, err := unix.Write(w.fd, p)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		p = p[m:]
	}
	return nil
}
