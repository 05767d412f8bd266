package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-runtime/berth/cri/checkpoint"
	"github.com/berth-runtime/berth/imagesvc"
)

const checkpointUsage = "usage: berthd checkpoint export-containerd --netns PATH [--bind DEST=SRC ...] [--cgroups-path PATH] [--ref NAME] [--push REF [--plain-http]] ARCHIVE DIR\n" +
	"  writes the checkpoint ARCHIVE as containerd's checkpoint image, an OCI image layout in DIR (pushed to REF with --push),\n" +
	"  for `ctr containers restore --live --rw` on a containerd node (docs/migration.md)"

// bindFlags collect --bind DEST=SRC.
type bindFlags map[string]string

func (b bindFlags) String() string { return fmt.Sprint(map[string]string(b)) }

func (b bindFlags) Set(v string) error {
	dst, src, ok := strings.Cut(v, "=")
	if !ok || !filepath.IsAbs(dst) || !filepath.IsAbs(src) {
		return fmt.Errorf("--bind %q: want DEST=SRC, both absolute", v)
	}
	b[filepath.Clean(dst)] = src
	return nil
}

// checkpointCmd converts checkpoint archives for other runtimes. It runs
// without berthd: the archive is a file, the output a directory.
func checkpointCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "export-containerd" {
		return errors.New(checkpointUsage)
	}
	fs := flag.NewFlagSet("berthd checkpoint export-containerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	binds := bindFlags{}
	opts := checkpoint.ContainerdImageOptions{Binds: binds}
	fs.StringVar(&opts.NetNS, "netns", "", "network namespace (a pinned path on the containerd node) to restore into")
	fs.Var(binds, "bind", "DEST=SRC: source on the containerd node of the checkpoint's bind mount at DEST (repeatable)")
	fs.StringVar(&opts.CgroupsPath, "cgroups-path", "", "cgroup of the restored container (default: the runtime's choice)")
	ref := fs.String("ref", "", "name of the image in the layout (default: the archive's name)")
	push := fs.String("push", "", "registry reference to push the image to (credentials: the docker config)")
	plainHTTP := fs.Bool("plain-http", false, "push over plain HTTP")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New(checkpointUsage)
	}
	archive, out := fs.Arg(0), fs.Arg(1)
	if *ref == "" {
		*ref = strings.TrimSuffix(filepath.Base(archive), filepath.Ext(archive))
	}
	ctx := context.Background()
	// Unpacked beside the output, on the same file system as it.
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(out)), ".berth-export-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ckpt, err := checkpoint.Extract(ctx, archive, filepath.Join(tmp, "c"))
	if err != nil {
		return err
	}
	if err := ckpt.WriteContainerdImage(ctx, out, *ref, opts); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: containerd checkpoint image %q of base image %q\n", out, *ref, ckpt.Config.RootfsImageName)
	if *push == "" {
		return nil
	}
	if err := imagesvc.PushLayout(ctx, out, *push, *plainHTTP); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "pushed %s\n", *push)
	return nil
}
