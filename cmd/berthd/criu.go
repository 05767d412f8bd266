package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	shimruntime "github.com/berth-runtime/berth/shim/runtime"
)

const criuUsage = "usage: berthd criu probe [--timeout DURATION] CRIU (dumps and restores a throwaway process with CRIU)"

// criuCmd lets setup and operators ask the question berthd asks at start:
// does this CRIU checkpoint and restore here, within a bound?
func criuCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "probe" {
		return errors.New(criuUsage)
	}
	fs := flag.NewFlagSet("berthd criu probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 60*time.Second, "bound of the whole probe")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 || *timeout <= 0 {
		return errors.New(criuUsage)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	// A directory of its own: the probe clears what earlier probes left
	// in the one it is given.
	dir, err := os.MkdirTemp("", "berthd-criu-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	if err := shimruntime.ProbeCRIU(ctx, fs.Arg(0), dir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: dump and restore work (%s)\n", fs.Arg(0), time.Since(start).Round(time.Millisecond))
	return nil
}
