// Command sysprobe makes the raw syscalls named on its command line and
// prints "name=ok" or "name=ERRNO" for each, so an e2e test can see what
// the container's seccomp filter let through. busybox makes none of them.
package main

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	for _, name := range os.Args[1:] {
		fmt.Printf("%s=%s\n", name, result(probe(name)))
	}
}

func probe(name string) error {
	switch name {
	case "io_uring_setup":
		var params [120]byte // struct io_uring_params
		fd, _, errno := unix.RawSyscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0)
		if errno == 0 {
			unix.Close(int(fd))
		}
		return errnoErr(errno)
	case "ustat":
		// Unprivileged and not on the RuntimeDefault list; without seccomp
		// device 0 has no filesystem: EINVAL.
		var buf unix.Ustat_t
		_, _, errno := unix.RawSyscall(unix.SYS_USTAT, 0, uintptr(unsafe.Pointer(&buf)), 0)
		return errnoErr(errno)
	case "personality_addr_no_randomize":
		// Turning ASLR off is what RuntimeDefault filters personality for.
		const addrNoRandomize = 0x0040000 // <linux/personality.h>
		_, _, errno := unix.RawSyscall(unix.SYS_PERSONALITY, addrNoRandomize, 0, 0)
		return errnoErr(errno)
	case "getpid":
		_, _, errno := unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0)
		return errnoErr(errno)
	}
	return fmt.Errorf("unknown probe %q", name)
}

func errnoErr(errno unix.Errno) error {
	if errno == 0 {
		return nil
	}
	return errno
}

func result(err error) string {
	var errno unix.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno):
		return unix.ErrnoName(errno)
	}
	return err.Error()
}
