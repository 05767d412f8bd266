// Command nodee2e is the Go half of the node conformance runner
// (test/node-e2e/run.sh): it builds the images the upstream e2e_node suite
// pulls and pushes them under their upstream names to the loopback registry
// the mirror tree points at, turns the checked-in skip list into a ginkgo
// skip expression, and summarizes a run's ginkgo report the same way for
// every runtime.
//
//	nodee2e images -registry 127.0.0.1:5000 -bin DIR -debs DIR
//	nodee2e skip-regex skip.txt
//	nodee2e summary -report report.json -focus REGEX -skips skip.txt -out DIR
//	nodee2e compare berth RESULTS containerd RESULTS
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nodee2e images|skip-regex|summary|compare [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "images":
		err = imagesCmd(ctx, os.Args[2:])
	case "skip-regex":
		err = skipRegexCmd(os.Args[2:])
	case "summary":
		err = summaryCmd(os.Args[2:])
	case "compare":
		err = compareCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if errors.Is(err, errSpecsFailed) {
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "nodee2e %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
