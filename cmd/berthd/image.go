package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/imagesvc"
)

const imageUsage = "usage: berthd image load [--config FILE] ARCHIVE (an OCI image-layout tar or a docker save tar; - for stdin; through the running berthd, else offline)"

// imageCmd runs image commands on the store berthd uses: through the
// running berthd's admin socket when one serves, else on the store
// directly (bbolt lets one process open meta.db).
func imageCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "load" {
		return errors.New(imageUsage)
	}
	fs := flag.NewFlagSet("berthd image load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "config file (TOML)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New(imageUsage)
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := config.Load(*cfgPath, explicit)
	if err != nil {
		return err
	}
	in := io.Reader(os.Stdin)
	if p := fs.Arg(0); p != "-" {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	if err := loadViaDaemon(ctx, adminSocket(cfg), in, stdout); !errors.Is(err, errNoDaemon) {
		return err
	}
	return loadImages(ctx, cfg, in, stdout, stderr)
}

func loadImages(ctx context.Context, cfg config.Config, in io.Reader, stdout, stderr io.Writer) error {
	if err := os.MkdirAll(cfg.Root, 0o711); err != nil {
		return fmt.Errorf("create %s: %w", cfg.Root, err)
	}
	dbPath := filepath.Join(cfg.Root, "meta.db")
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("%s is locked by a berthd that does not answer on %s yet; retry once it serves, or stop it to load offline", dbPath, adminSocket(cfg))
	}
	if err != nil {
		return fmt.Errorf("open metadata: %w", err)
	}
	defer db.Close()
	log, _ := newLogger(cfg.Log, stderr)
	svc, err := imagesvc.New(ctx, imagesvc.Options{
		Root: cfg.Root, DB: db, Logger: log, HostsDir: cfg.Registry.ConfigPath, Limits: imageLimits(cfg.Registry),
	})
	if err != nil {
		return fmt.Errorf("open image store: %w", err)
	}
	imgs, err := svc.Load(ctx, in)
	for _, img := range imgs {
		fmt.Fprintf(stdout, "loaded %s %v\n", img.ID, img.RepoTags)
	}
	return err
}

// imageLimits are the [registry] bounds in imagesvc's terms.
func imageLimits(r config.Registry) imagesvc.Limits {
	l := imagesvc.Limits{
		ProgressTimeout: r.ProgressTimeout(),
		MaxLayers:       r.MaxLayers,
		MaxManifestSize: r.MaxManifestSize,
		MaxConfigSize:   r.MaxConfigSize,
		MaxZstdWindow:   r.MaxZstdWindow,
		MaxUnpackedSize: r.MaxUnpackedSize,
	}
	if l.ProgressTimeout == 0 {
		l.ProgressTimeout = -1 // "0s" turns it off, as in containerd; imagesvc reads 0 as its default
	}
	return l
}
