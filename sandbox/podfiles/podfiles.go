// Package podfiles writes the per-pod files that every container of a pod
// sandbox bind-mounts (hostname, hosts, resolv.conf) and mounts the pod's
// /dev/shm tmpfs.
package podfiles

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Host files copied for pods that use the host's network or DNS.
const (
	HostResolvConf = "/etc/resolv.conf"
	HostHosts      = "/etc/hosts"
)

// DefaultShmSize is the size of a pod's /dev/shm when none is given, as in
// docker, containerd and CRI-O.
const DefaultShmSize = 64 << 20

// defaultHosts is what containerd writes for a pod in its own network
// namespace; kubelet replaces /etc/hosts for most pods anyway.
const defaultHosts = `127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
fe00::0	ip6-localnet
fe00::0	ip6-mcastprefix
fe00::1	ip6-allnodes
fe00::2	ip6-allrouters
`

// WriteHostname writes name and a newline to path.
func WriteHostname(path, name string) error {
	if err := writeFile(path, []byte(name+"\n")); err != nil {
		return fmt.Errorf("write hostname file: %w", err)
	}
	return nil
}

// WriteHosts writes the default hosts file of a pod to path.
func WriteHosts(path string) error {
	if err := writeFile(path, []byte(defaultHosts)); err != nil {
		return fmt.Errorf("write hosts file: %w", err)
	}
	return nil
}

// ResolvConf renders a resolv.conf. Values are written as given; a value
// holding a line break would inject lines and is rejected.
func ResolvConf(servers, searches, options []string) ([]byte, error) {
	for _, list := range [][]string{servers, searches, options} {
		for _, v := range list {
			if v == "" || strings.ContainsAny(v, "\n\r \t") {
				return nil, fmt.Errorf("dns value %q: %w", v, errdefs.ErrInvalidArgument)
			}
		}
	}
	var b strings.Builder
	if len(searches) > 0 {
		b.WriteString("search " + strings.Join(searches, " ") + "\n")
	}
	for _, s := range servers {
		b.WriteString("nameserver " + s + "\n")
	}
	if len(options) > 0 {
		b.WriteString("options " + strings.Join(options, " ") + "\n")
	}
	return []byte(b.String()), nil
}

// WriteResolvConf writes the resolv.conf rendered by ResolvConf to path.
func WriteResolvConf(path string, servers, searches, options []string) error {
	data, err := ResolvConf(servers, searches, options)
	if err != nil {
		return err
	}
	if err := writeFile(path, data); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	return nil
}

// CopyHostFile copies a host file such as /etc/resolv.conf to dst. A missing
// source yields an empty file: a host without resolv.conf has no resolver
// configuration to give either.
func CopyHostFile(dst, src string) error {
	data, err := os.ReadFile(src)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %q: %w", src, err)
	}
	if err := writeFile(dst, data); err != nil {
		return fmt.Errorf("copy %q: %w", src, err)
	}
	return nil
}

func writeFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// MountShm creates dir and mounts a tmpfs of size bytes on it with the
// options docker and containerd use for /dev/shm. On error nothing is left.
func MountShm(dir string, size int64) error {
	if size <= 0 {
		return fmt.Errorf("shm size %d: %w", size, errdefs.ErrInvalidArgument)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("create shm dir: %w", err)
	}
	data := "mode=1777,size=" + strconv.FormatInt(size, 10)
	flags := uintptr(unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC)
	if err := unix.Mount("shm", dir, "tmpfs", flags, data); err != nil {
		_ = os.Remove(dir)
		return fmt.Errorf("mount shm tmpfs on %q: %w", dir, err)
	}
	return nil
}

// UnmountShm unmounts the shm tmpfs; the directory goes with the pod
// directory. It is idempotent: a missing or unmounted directory is fine.
func UnmountShm(dir string) error {
	if dir == "" {
		return nil
	}
	for i := 0; i < 16; i++ {
		err := unix.Unmount(dir, unix.MNT_DETACH)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("unmount shm %q: %w", dir, err)
	}
	return fmt.Errorf("unmount shm %q: still mounted: %w", dir, errdefs.ErrFailedPrecondition)
}
