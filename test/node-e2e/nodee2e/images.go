package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-runtime/berth/test/testutil"
)

// The images the [NodeConformance] specs of e2e_node v1.37.2 run
// (k8s.io/kubernetes/test/utils/image/manifest.go), under the path the
// mirror tree maps registry.k8s.io/<path> to. Each is assembled here from
// what this machine has: busybox-static, Debian's binaries, and the Go test
// programs of the k8s.io/kubernetes module built by build.sh. Images the
// focused specs do not run (perl, node-perf, cadvisor, ...) are not built;
// the runner does not pre-pull, so nothing asks for them.
const (
	busyboxRepo   = "e2e-test-images/busybox:1.37.0-2"
	agnhostRepo   = "e2e-test-images/agnhost:2.66.1"
	agnhostPrev   = "e2e-test-images/agnhost:2.55"
	nginxRepo     = "e2e-test-images/nginx:1.27.0-2"
	nginxNewRepo  = "e2e-test-images/nginx:1.28.0-2"
	nonewprivs    = "e2e-test-images/nonewprivs:1.4"
	nonroot       = "e2e-test-images/nonroot:1.5"
	ipcUtils      = "e2e-test-images/ipc-utils:1.4"
	glibcDNS      = "e2e-test-images/glibc-dns-testing:2.1.1"
	pauseRepo     = "pause:3.10.2"
	imagePathEnv  = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	busyboxStatic = "/bin/busybox"
)

// passwd and group of every image, as the upstream busybox image has them.
const (
	basePasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	baseGroup = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:8:
www-data:x:33:
operator:x:37:
staff:x:50:
users:x:100:
nogroup:x:65534:
`
	nsswitch = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
)

// nginxConf serves /usr/share/nginx/html on port 80, logging to the
// container's stdout and stderr, as the upstream nginx image does.
const nginxConf = `user nginx;
worker_processes 1;
error_log /var/log/nginx/error.log notice;
pid /var/run/nginx.pid;
events { worker_connections 1024; }
http {
    default_type text/html;
    access_log /var/log/nginx/access.log;
    sendfile on;
    keepalive_timeout 65;
    server {
        listen 80;
        server_name localhost;
        location / {
            root /usr/share/nginx/html;
            index index.html index.htm;
        }
    }
}
`

type imageBuilder struct {
	bin  string // build.sh's output: agnhost, nnp, porter's localhost.{crt,key}
	debs string // Debian packages downloaded (not installed) for the images
	// berthPause is the static pause program the pause image runs.
	berthPause string
	// nmeter is the stand-in for the busybox applet Debian's busybox-static
	// lacks (test/node-e2e/nmeter), static.
	nmeter string
	base   v1.Layer
}

func imagesCmd(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("images", flag.ContinueOnError)
	registry := fl.String("registry", "127.0.0.1:5000", "loopback registry the mirror tree points at")
	bin := fl.String("bin", "", "directory with agnhost, nnp, localhost.crt, localhost.key (build.sh)")
	debs := fl.String("debs", "", "cache directory for Debian packages")
	pause := fl.String("pause", "", "static pause binary (berth-pause)")
	nmeter := fl.String("nmeter", "", "static nmeter stand-in (test/node-e2e/nmeter)")
	list := fl.Bool("list", false, "print the upstream references and exit")
	if err := fl.Parse(args); err != nil {
		return err
	}
	b := &imageBuilder{bin: *bin, debs: *debs, berthPause: *pause, nmeter: *nmeter}
	imgs, err := b.build(*list)
	if err != nil {
		return err
	}
	refs := make([]string, 0, len(imgs))
	for r := range imgs {
		refs = append(refs, r)
	}
	sort.Strings(refs)
	for _, r := range refs {
		if *list {
			fmt.Println("registry.k8s.io/" + r)
			continue
		}
		if err := pushIfChanged(ctx, *registry+"/"+r, imgs[r]); err != nil {
			return err
		}
	}
	return nil
}

// build assembles every image; with listOnly, only the names are needed.
func (b *imageBuilder) build(listOnly bool) (map[string]v1.Image, error) {
	steps := []struct {
		refs []string
		fn   func() (v1.Image, error)
	}{
		{[]string{busyboxRepo}, func() (v1.Image, error) { return b.image(imgConfig{Cmd: []string{"sh"}}) }},
		{[]string{agnhostRepo, agnhostPrev}, b.agnhost},
		{[]string{nginxRepo, nginxNewRepo}, b.nginx},
		{[]string{nonewprivs}, b.nonewprivs},
		{[]string{nonroot}, func() (v1.Image, error) { return b.image(imgConfig{Cmd: []string{"sh"}, User: "1234"}) }},
		{[]string{ipcUtils}, b.ipcUtils},
		{[]string{glibcDNS}, b.glibcDNS},
		{[]string{pauseRepo}, b.pause},
	}
	out := map[string]v1.Image{}
	for _, s := range steps {
		var img v1.Image
		if !listOnly {
			var err error
			if img, err = s.fn(); err != nil {
				return nil, fmt.Errorf("image %s: %w", s.refs[0], err)
			}
		}
		for i, r := range s.refs {
			if img != nil && i > 0 {
				// A distinct image per tag, as upstream: two tags of one
				// digest would make kubelet see one image under two names.
				var err error
				if img, err = withLabel(img, "berth.node-e2e.tag", r); err != nil {
					return nil, err
				}
			}
			out[r] = img
		}
	}
	return out, nil
}

type imgConfig struct {
	Entrypoint, Cmd []string
	User            string
	ExposedPorts    []string
	StopSignal      string
	NoBase          bool // the image does not start from the busybox layer
}

// image builds an image of the busybox base layer (unless NoBase) and layers.
func (b *imageBuilder) image(c imgConfig, layers ...v1.Layer) (v1.Image, error) {
	cfg := &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Config: v1.Config{
			Entrypoint: c.Entrypoint, Cmd: c.Cmd, User: c.User,
			Env: []string{imagePathEnv}, StopSignal: c.StopSignal,
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	if len(c.ExposedPorts) > 0 {
		cfg.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range c.ExposedPorts {
			cfg.Config.ExposedPorts[p] = struct{}{}
		}
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, fmt.Errorf("set image config: %w", err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	if !c.NoBase {
		base, err := b.baseLayer()
		if err != nil {
			return nil, err
		}
		layers = append([]v1.Layer{base}, layers...)
	}
	img, err = mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	return img, nil
}

func withLabel(img v1.Image, k, v string) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	if cf.Config.Labels == nil {
		cf.Config.Labels = map[string]string{}
	}
	cf.Config.Labels[k] = v
	return mutate.ConfigFile(img, cf)
}

// baseLayer is upstream's busybox image made of Debian's busybox-static:
// every applet in /bin (nmeter, which Debian leaves out, by a stand-in),
// the busybox image's passwd and group.
func (b *imageBuilder) baseLayer() (v1.Layer, error) {
	if b.base != nil {
		return b.base, nil
	}
	bb, err := os.ReadFile(busyboxStatic)
	if err != nil {
		return nil, fmt.Errorf("read busybox-static (Debian package busybox-static): %w", err)
	}
	out, err := exec.Command(busyboxStatic, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets: %w", err)
	}
	// The lifecycle ordering specs timestamp their output with nmeter.
	nm, err := os.ReadFile(b.nmeter)
	if err != nil {
		return nil, fmt.Errorf("read nmeter stand-in: %w", err)
	}
	files := []testutil.File{
		{Path: "/bin", Dir: true}, {Path: "/bin/busybox", Body: string(bb), Mode: 0o755},
		{Path: "/bin/nmeter", Body: string(nm), Mode: 0o755},
	}
	for _, a := range strings.Fields(string(out)) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		files = append(files, testutil.File{Path: "/bin/" + a, Symlink: "busybox"})
	}
	for _, d := range []string{"/dev", "/etc", "/home", "/proc", "/sys", "/usr", "/usr/bin", "/usr/sbin", "/usr/local", "/usr/local/bin", "/var", "/var/spool", "/var/spool/mail", "/var/www"} {
		files = append(files, testutil.File{Path: d, Dir: true})
	}
	files = append(files,
		testutil.File{Path: "/root", Dir: true, Mode: 0o700},
		testutil.File{Path: "/tmp", Dir: true, Mode: 0o1777},
		testutil.File{Path: "/etc/passwd", Body: basePasswd},
		testutil.File{Path: "/etc/group", Body: baseGroup},
		testutil.File{Path: "/etc/nsswitch.conf", Body: nsswitch},
	)
	sortFiles(files)
	b.base, err = testutil.NewLayer(files)
	return b.base, err
}

// agnhost as upstream's Dockerfile assembles it on alpine: /agnhost and
// its agnhost-2 alias, porter's certificate, /uploads for netexec, the
// user and group the SupplementalGroups specs expect, and the tools specs
// exec in it (bash, curl; nc, ip and the rest come from busybox).
func (b *imageBuilder) agnhost() (v1.Image, error) {
	var files []testutil.File
	for _, f := range []struct{ src, dst string }{
		{"agnhost", "/agnhost"}, {"localhost.crt", "/localhost.crt"}, {"localhost.key", "/localhost.key"},
	} {
		data, err := os.ReadFile(filepath.Join(b.bin, f.src))
		if err != nil {
			return nil, fmt.Errorf("read build output: %w", err)
		}
		files = append(files, testutil.File{Path: f.dst, Body: string(data), Mode: 0o755})
	}
	files = append(files,
		testutil.File{Path: "/agnhost-2", Symlink: "agnhost"},
		testutil.File{Path: "/uploads", Dir: true},
		testutil.File{Path: "/etc", Dir: true},
		testutil.File{Path: "/etc/passwd", Body: basePasswd + "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n"},
		testutil.File{Path: "/etc/group", Body: baseGroup + "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n"},
		testutil.File{Path: "/home/user-defined-in-image", Dir: true, UID: 1000, GID: 1000},
	)
	tools, err := hostBinaries("/bin/bash", "/usr/bin/curl")
	if err != nil {
		return nil, err
	}
	files = append(files, tools...)
	sortFiles(files)
	l, err := testutil.NewLayer(withParents(files))
	if err != nil {
		return nil, err
	}
	return b.image(imgConfig{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"},
		ExposedPorts: []string{"80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"}}, l)
}

// nginx from Debian's nginx package (downloaded, not installed) with the
// libraries it links from this host.
func (b *imageBuilder) nginx() (v1.Image, error) {
	root, err := debUnpack(b.debs, "nginx")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(root, "usr/sbin/nginx")
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("read nginx from its package: %w", err)
	}
	libs, err := sharedLibs(bin)
	if err != nil {
		return nil, err
	}
	files := []testutil.File{
		{Path: "/usr/sbin/nginx", Body: string(data), Mode: 0o755},
		{Path: "/etc/nginx/nginx.conf", Body: nginxConf},
		{Path: "/usr/share/nginx/html/index.html", Body: "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head><body><h1>Welcome to nginx!</h1></body></html>\n"},
		{Path: "/var/log/nginx/access.log", Symlink: "/dev/stdout"},
		{Path: "/var/log/nginx/error.log", Symlink: "/dev/stderr"},
		{Path: "/var/lib/nginx", Dir: true},
		{Path: "/var/cache/nginx", Dir: true},
		{Path: "/var/run", Dir: true},
		{Path: "/etc/passwd", Body: basePasswd + "nginx:x:101:101:nginx:/nonexistent:/bin/false\n"},
		{Path: "/etc/group", Body: baseGroup + "nginx:x:101:\n"},
	}
	files = append(files, libs...)
	sortFiles(files)
	l, err := testutil.NewLayer(withParents(files))
	if err != nil {
		return nil, err
	}
	return b.image(imgConfig{Cmd: []string{"nginx", "-g", "daemon off;"}, ExposedPorts: []string{"80/tcp"}, StopSignal: "SIGQUIT"}, l)
}

// nonewprivs: test/images/nonewprivs' nnp, setuid root, as its Dockerfile.
func (b *imageBuilder) nonewprivs() (v1.Image, error) {
	data, err := os.ReadFile(filepath.Join(b.bin, "nnp"))
	if err != nil {
		return nil, fmt.Errorf("read build output: %w", err)
	}
	l, err := testutil.NewLayer(withParents([]testutil.File{{Path: "/usr/local/bin/nnp", Body: string(data), Mode: 0o4755}}))
	if err != nil {
		return nil, err
	}
	return b.image(imgConfig{Cmd: []string{"nnp"}}, l)
}

// ipc-utils: upstream adds util-linux's ipc tools to busybox.
func (b *imageBuilder) ipcUtils() (v1.Image, error) {
	files, err := hostBinaries("/usr/bin/ipcs", "/usr/bin/ipcmk", "/usr/bin/ipcrm")
	if err != nil {
		return nil, err
	}
	sortFiles(files)
	l, err := testutil.NewLayer(withParents(files))
	if err != nil {
		return nil, err
	}
	return b.image(imgConfig{Cmd: []string{"sh"}}, l)
}

// glibc-dns-testing is Debian with glibc's resolver: dash as sh and
// Debian's hostname, whose -f goes through glibc and /etc/hosts (busybox's
// applet would not: the static shell runs its own applets first).
func (b *imageBuilder) glibcDNS() (v1.Image, error) {
	files, err := hostBinaries("/bin/dash", "/bin/hostname", "/bin/cat", "/bin/sleep")
	if err != nil {
		return nil, err
	}
	files = append(files,
		testutil.File{Path: "/bin/sh", Symlink: "dash"},
		testutil.File{Path: "/etc/passwd", Body: basePasswd},
		testutil.File{Path: "/etc/group", Body: baseGroup},
		testutil.File{Path: "/etc/nsswitch.conf", Body: nsswitch},
		testutil.File{Path: "/tmp", Dir: true, Mode: 0o1777},
		testutil.File{Path: "/dev", Dir: true},
		testutil.File{Path: "/proc", Dir: true},
		testutil.File{Path: "/sys", Dir: true},
	)
	sortFiles(files)
	l, err := testutil.NewLayer(withParents(files))
	if err != nil {
		return nil, err
	}
	return b.image(imgConfig{Cmd: []string{"sh"}, NoBase: true}, l)
}

// pause: a static program that waits for a signal, as /pause.
func (b *imageBuilder) pause() (v1.Image, error) {
	data, err := os.ReadFile(b.berthPause)
	if err != nil {
		return nil, fmt.Errorf("read pause binary: %w", err)
	}
	l, err := testutil.NewLayer([]testutil.File{{Path: "/pause", Body: string(data), Mode: 0o755}})
	if err != nil {
		return nil, err
	}
	return b.image(imgConfig{Entrypoint: []string{"/pause"}, User: "65535:65535", NoBase: true}, l)
}

// hostBinaries returns Debian's installed binaries at their paths with the
// shared libraries they load.
func hostBinaries(bins ...string) ([]testutil.File, error) {
	var files []testutil.File
	seen := map[string]bool{}
	for _, bin := range bins {
		data, err := os.ReadFile(bin)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", bin, err)
		}
		files = append(files, testutil.File{Path: bin, Body: string(data), Mode: 0o755})
		libs, err := sharedLibs(bin)
		if err != nil {
			return nil, err
		}
		for _, l := range libs {
			if !seen[l.Path] {
				seen[l.Path] = true
				files = append(files, l)
			}
		}
	}
	return files, nil
}

var lddPath = regexp.MustCompile(`(/\S+) \(0x`)

// sharedLibs lists the libraries ldd resolves for bin on this host, as
// image files at their canonical Debian paths.
func sharedLibs(bin string) ([]testutil.File, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, out)
	}
	if strings.Contains(string(out), "not found") {
		return nil, fmt.Errorf("ldd %s: missing libraries: %s", bin, out)
	}
	var files []testutil.File
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := lddPath.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		real, err := filepath.EvalSymlinks(m[1])
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", m[1], err)
		}
		data, err := os.ReadFile(real)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", real, err)
		}
		dst := "/lib/x86_64-linux-gnu/" + path.Base(m[1])
		if strings.Contains(m[1], "ld-linux") {
			dst = "/lib64/" + path.Base(m[1])
		}
		files = append(files, testutil.File{Path: dst, Body: string(data), Mode: 0o755})
	}
	return files, nil
}

// debUnpack downloads Debian package pkg into dir (once) and unpacks it.
func debUnpack(dir, pkg string) (string, error) {
	if dir == "" {
		return "", errors.New("no -debs directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(debs) == 0 {
		cmd := exec.Command("apt-get", "download", pkg)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get download %s (package lists missing? apt-get update): %w: %s", pkg, err, out)
		}
		debs, _ = filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
		if len(debs) == 0 {
			return "", fmt.Errorf("apt-get download %s left no .deb in %s", pkg, dir)
		}
	}
	sort.Strings(debs)
	root := filepath.Join(dir, pkg+".root")
	if err := os.RemoveAll(root); err != nil {
		return "", fmt.Errorf("clear %s: %w", root, err)
	}
	if out, err := exec.Command("dpkg-deb", "-x", debs[len(debs)-1], root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %w: %s", debs[len(debs)-1], err, out)
	}
	return root, nil
}

// withParents adds a directory entry for every parent of files that has
// none, so the layer never relies on the runtime creating directories.
func withParents(files []testutil.File) []testutil.File {
	have := map[string]bool{}
	for _, f := range files {
		have[f.Path] = true
	}
	var dirs []testutil.File
	for _, f := range files {
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if !have[d] {
				have[d] = true
				dirs = append(dirs, testutil.File{Path: d, Dir: true})
			}
		}
	}
	all := append(dirs, files...)
	sortFiles(all)
	return all
}

// sortFiles orders entries by path so a layer is byte-identical between
// builds and every directory precedes what it holds.
func sortFiles(files []testutil.File) {
	sort.SliceStable(files, func(i, j int) bool { return files[i].Path < files[j].Path })
}

// pushIfChanged pushes img as ref unless the registry already serves the
// same digest there: the images are deterministic, so reruns push nothing.
func pushIfChanged(ctx context.Context, ref string, img v1.Image) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("parse %q: %w", ref, err)
	}
	want, err := img.Digest()
	if err != nil {
		return fmt.Errorf("digest of %q: %w", ref, err)
	}
	if d, err := remote.Head(r, remote.WithContext(ctx)); err == nil && d.Digest == want {
		fmt.Fprintf(os.Stderr, "up to date %s %s\n", ref, want)
		return nil
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push %q: %w", ref, err)
	}
	fmt.Fprintf(os.Stderr, "pushed %s %s\n", ref, want)
	return nil
}
