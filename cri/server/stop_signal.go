package server

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Real-time signals are named as glibc, docker and runc number them:
// SIGRTMIN is 34, since glibc keeps the kernel's 32 and 33 for itself,
// and SIGRTMAX is 64. An image's STOPSIGNAL SIGRTMIN+3 (systemd's) means 37.
const (
	sigRTMin = 34
	sigRTMax = 64
)

// signalAliases are the names the CRI's Signal enum (and images) use that
// x/sys/unix knows only under another name.
var signalAliases = map[string]syscall.Signal{
	"SIGCLD": unix.SIGCHLD, "SIGIOT": unix.SIGABRT, "SIGPOLL": unix.SIGIO,
}

// parseSignal reads a stop signal as an image's config or the record holds
// it: "SIGUSR1", "usr1", "10", "SIGRTMIN+3", "SIGRTMAX-2", or the CRI enum's
// spelling "SIGRTMINPLUS3" (records written before the OCI form was kept).
// "" is SIGTERM, the CRI's runtime default.
func parseSignal(name string) (syscall.Signal, error) {
	if name == "" {
		return unix.SIGTERM, nil
	}
	if n, err := strconv.Atoi(name); err == nil && n > 0 && n <= sigRTMax {
		return syscall.Signal(n), nil
	}
	up := strings.ToUpper(name)
	if !strings.HasPrefix(up, "SIG") {
		up = "SIG" + up
	}
	up = strings.Replace(strings.Replace(up, "PLUS", "+", 1), "MINUS", "-", 1)
	if sig := unix.SignalNum(up); sig != 0 {
		return sig, nil
	}
	if sig, ok := signalAliases[up]; ok {
		return sig, nil
	}
	if sig, ok := parseRTSignal(up); ok {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown stop signal %q: %w", name, errdefs.ErrInvalidArgument)
}

func parseRTSignal(up string) (syscall.Signal, bool) {
	var base, sign int
	var rest string
	switch {
	case up == "SIGRTMIN":
		return sigRTMin, true
	case up == "SIGRTMAX":
		return sigRTMax, true
	case strings.HasPrefix(up, "SIGRTMIN+"):
		base, sign, rest = sigRTMin, 1, strings.TrimPrefix(up, "SIGRTMIN+")
	case strings.HasPrefix(up, "SIGRTMAX-"):
		base, sign, rest = sigRTMax, -1, strings.TrimPrefix(up, "SIGRTMAX-")
	default:
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 {
		return 0, false
	}
	sig := base + sign*n
	if sig < sigRTMin || sig > sigRTMax {
		return 0, false
	}
	return syscall.Signal(sig), true
}

// criStopSignal turns ContainerConfig.stop_signal into the name the record
// keeps, in the form images use ("SIGRTMIN+1", not the enum's
// "SIGRTMINPLUS1"); "" for the runtime default. A value outside the enum
// is refused, as containerd refuses it.
func criStopSignal(sig runtime.Signal) (string, error) {
	if sig == runtime.Signal_SIGNAL_RUNTIME_DEFAULT {
		return "", nil
	}
	name, ok := runtime.Signal_name[int32(sig)]
	if !ok {
		return "", fmt.Errorf("unknown stop_signal %d: %w", sig, errdefs.ErrInvalidArgument)
	}
	name = strings.TrimPrefix(name, "SIGNAL_")
	return strings.Replace(strings.Replace(name, "PLUS", "+", 1), "MINUS", "-", 1), nil
}

// criSignals maps a signal number to the CRI's enum; where the enum has
// two names for one number (SIGABRT and SIGIOT) the first, canonical one.
var criSignals = func() map[syscall.Signal]runtime.Signal {
	out := map[syscall.Signal]runtime.Signal{}
	for v := range runtime.Signal_name {
		sig := runtime.Signal(v)
		name, err := criStopSignal(sig)
		if err != nil || name == "" {
			continue
		}
		n, err := parseSignal(name)
		if err != nil {
			continue
		}
		if old, ok := out[n]; !ok || sig < old {
			out[n] = sig
		}
	}
	return out
}()

// statusStopSignal is ContainerStatus.stop_signal: the signal
// StopContainer sends first (the container config's, else the image's,
// else SIGTERM). A number the enum cannot name (32, 33) is reported as
// the runtime default.
func statusStopSignal(sig syscall.Signal) runtime.Signal {
	return criSignals[sig]
}
