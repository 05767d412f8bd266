// Command nmeter stands in, in the suite's busybox image, for the busybox
// applet Debian's busybox-static is built without. The e2e_node specs of
// container lifecycle ordering (container_lifecycle_pod_construction.go)
// timestamp every line with
//
//	date -u +%FT$(nmeter -d0 '%3t' | head -n1)Z
//
// so only what that needs is implemented: -d MSEC between lines and the
// %[N]t directive (the time of day, HH:MM:SS with N decimals); other text
// is printed as is. Like busybox's it prints until its output is closed.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	delay, format, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "nmeter: %v\nusage: nmeter [-d MSEC] FORMAT (only %%[N]t is supported)\n", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for {
		if _, err := fmt.Fprintln(w, render(format, time.Now())); err != nil {
			os.Exit(0)
		}
		if err := w.Flush(); err != nil {
			os.Exit(0) // the reader went away (head -n1): done
		}
		if delay > 0 {
			time.Sleep(time.Duration(delay) * time.Millisecond)
		}
	}
}

// parseArgs takes busybox's forms: -dMSEC or -d MSEC, then FORMAT.
func parseArgs(args []string) (delay int, format string, err error) {
	delay = 1000
	for len(args) > 1 && strings.HasPrefix(args[0], "-d") {
		v := strings.TrimPrefix(args[0], "-d")
		args = args[1:]
		if v == "" {
			v, args = args[0], args[1:]
		}
		if delay, err = strconv.Atoi(v); err != nil {
			return 0, "", fmt.Errorf("bad -d %q", v)
		}
	}
	if len(args) != 1 {
		return 0, "", fmt.Errorf("want one FORMAT, got %q", args)
	}
	return delay, args[0], nil
}

// render expands %[N]t in format for now; anything else stays literal.
func render(format string, now time.Time) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 >= len(format) {
			b.WriteByte(format[i])
			continue
		}
		j := i + 1
		n := 0
		for j < len(format) && format[j] >= '0' && format[j] <= '9' {
			n = n*10 + int(format[j]-'0')
			j++
		}
		if j < len(format) && format[j] == 't' {
			b.WriteString(now.Format("15:04:05"))
			if n > 0 {
				frac := fmt.Sprintf("%09d", now.Nanosecond())
				b.WriteString("." + frac[:min(n, 9)])
			}
			i = j
			continue
		}
		b.WriteByte(format[i])
	}
	return b.String()
}
