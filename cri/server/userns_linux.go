package server

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/specgen"
)

// usernsFD returns an open /proc/<pid>/ns/user of a user namespace with
// the given mappings, for mount_setattr(MOUNT_ATTR_IDMAP). The namespace
// is made by a child that is stopped by ptrace at its exec and killed at
// once: it never runs a single instruction of the binary, so any binary
// does; the namespace lives on through the returned file.
func usernsFD(m specgen.IDMappings) (*os.File, error) {
	uids, gids := infraIDMapsOf(m)
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	cmd := exec.Command(exe)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: uids,
		GidMappings: gids,
		Ptrace:      true,
		Pdeathsig:   syscall.SIGKILL,
	}
	// A ptraced child is traced by the thread that forked it.
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start user namespace holder: %w", err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	if err != nil {
		return nil, fmt.Errorf("open user namespace: %w", err)
	}
	return f, nil
}

// idmapSupported reports whether dir's filesystem takes idmapped mounts,
// by making one (detached, never attached anywhere) as critest does.
func idmapSupported(dir string) error {
	ns, err := usernsFD(specgen.IDMappings{
		UIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}},
		GIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}},
	})
	if err != nil {
		return err
	}
	defer ns.Close()
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree %q: %w", dir, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("idmap %q: %w", dir, err)
	}
	return nil
}

// idmapRootfs remounts the container's overlay rootfs so that the
// container's root owns its files, without copying or chowning a layer:
// overlayfs itself cannot be idmapped, but its lower layers can (Linux >=
// 5.19), which is how containerd does it. Each lower dir is bind-mounted
// idmapped at a temporary path, the overlay is mounted again over those,
// and the temporary mounts are detached at once (the overlay holds them).
// The empty upper dir is chowned to the mapped root so "/" is root's.
func idmapRootfs(rootfs string, m specgen.IDMappings) (retErr error) {
	lowers, upper, work, err := overlayDirs(rootfs)
	if err != nil {
		return err
	}
	ns, err := usernsFD(m)
	if err != nil {
		return err
	}
	defer ns.Close()
	uid, gid := m.HostRoot()
	for _, d := range []string{upper, work} {
		if err := os.Chown(d, int(uid), int(gid)); err != nil {
			return fmt.Errorf("chown %q to the mapped root: %w", d, err)
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(rootfs), "idmap")
	if err != nil {
		return fmt.Errorf("create idmap dir: %w", err)
	}
	var mapped []string
	defer func() {
		for _, p := range mapped {
			_ = unix.Unmount(p, unix.MNT_DETACH)
		}
		if err := os.RemoveAll(tmp); err != nil && retErr == nil {
			retErr = fmt.Errorf("remove idmap dir: %w", err)
		}
	}()
	for i, l := range lowers {
		p := filepath.Join(tmp, fmt.Sprint(i))
		if err := idmapBind(l, p, ns); err != nil {
			return err
		}
		mapped = append(mapped, p)
	}
	data := "lowerdir=" + strings.Join(mapped, ":") + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Unmount(rootfs, 0); err != nil {
		return fmt.Errorf("unmount rootfs %q: %w", rootfs, err)
	}
	if err := unix.Mount("overlay", rootfs, "overlay", 0, data); err != nil {
		return fmt.Errorf("mount idmapped overlay at %q: %w", rootfs, err)
	}
	return nil
}

// idmapBind attaches an idmapped, read-only clone of src at dst.
func idmapBind(src, dst string, ns *os.File) error {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return fmt.Errorf("create idmap mount point: %w", err)
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree %q: %w", src, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("idmap layer %q: %w", src, err)
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach idmapped layer %q: %w", src, err)
	}
	return nil
}

// overlayDirs reads the layer dirs of the overlay mounted at target.
func overlayDirs(target string) (lowers []string, upper, work string, err error) {
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(target))
	if err != nil {
		return nil, "", "", fmt.Errorf("read mountinfo: %w", err)
	}
	if len(infos) == 0 || infos[len(infos)-1].FSType != "overlay" {
		return nil, "", "", fmt.Errorf("rootfs %q is not an overlay mount: %w", target, errdefs.ErrFailedPrecondition)
	}
	for _, o := range strings.Split(infos[len(infos)-1].VFSOptions, ",") {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "lowerdir":
			lowers = strings.Split(v, ":")
		case "upperdir":
			upper = v
		case "workdir":
			work = v
		}
	}
	if len(lowers) == 0 || upper == "" || work == "" {
		return nil, "", "", fmt.Errorf("overlay at %q lacks lower, upper or work dir: %w", target, errdefs.ErrFailedPrecondition)
	}
	return lowers, upper, work, nil
}

// prepareUsernsRootfs readies a user namespace pod's container rootfs: the
// bundle must be traversable by the mapped root (runc mounts the rootfs
// from inside the namespace), and the layers idmapped. Only the mapped
// root's group may traverse it: open to all, it would hand the
// container's files, setuid binaries included, to every local user.
func prepareUsernsRootfs(pod *runtime.PodSandboxConfig, bundle, rootfs string) error {
	m, ok := specgen.PodUserns(pod)
	if !ok {
		return nil
	}
	_, gid := m.HostRoot()
	if err := os.Chown(bundle, 0, int(gid)); err != nil {
		return fmt.Errorf("open bundle %q to the mapped root: %w", bundle, err)
	}
	if err := os.Chmod(bundle, 0o710); err != nil {
		return fmt.Errorf("open bundle %q to the mapped root: %w", bundle, err)
	}
	return idmapRootfs(rootfs, m)
}

// traversable checks that users other than root may pass through dir and
// each of its parents: runc resolves a user namespace container's rootfs
// path as the mapped root, for whom root's 0700 dirs are closed. A part
// of the path that does not exist yet is skipped (berthd makes it 0711).
func traversable(dir string) error {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%q is not traversable by other users (mode %v): %w", p, fi.Mode().Perm(), errdefs.ErrFailedPrecondition)
		}
		if p == "/" {
			return nil
		}
	}
}
