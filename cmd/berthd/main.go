// Command berthd is berth's CRI daemon. main only parses flags, loads the
// config and wires the components together explicitly; the work lives in
// cri/, sandbox/, imagesvc/, netplugin/ and shim/client.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/metrics"
	"github.com/berth-runtime/berth/cri/nri"
	"github.com/berth-runtime/berth/cri/server"
	"github.com/berth-runtime/berth/cri/specgen"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/streaming"
	"github.com/berth-runtime/berth/cri/tracing"
	"github.com/berth-runtime/berth/imagesvc"
	"github.com/berth-runtime/berth/imagesvc/sigpolicy"
	"github.com/berth-runtime/berth/sandbox"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "berthd:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "config" {
		return configCmd(args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "image" {
		return imageCmd(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "criu" {
		return criuCmd(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "checkpoint" {
		return checkpointCmd(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("berthd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "config file (TOML)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := config.Load(*cfgPath, explicit)
	if err != nil {
		return err
	}
	return serve(cfg, configSource{path: *cfgPath, explicit: explicit}, stderr)
}

const configUsage = "usage: berthd config default | berthd config check [FILE] | berthd config show [FILE]"

// dropInHeader opens `berthd config default`, which make install writes
// to /etc/berth/config.toml.
const dropInHeader = `# berthd configuration: every key with its default (berthd config default).
# Drop-ins: every *.toml in config.d beside this file is merged over it in
# lexical order; tables merge key by key, arrays and other values replace.
# berthd config show prints the merged result.

`

func configCmd(args []string, stdout io.Writer) error {
	if len(args) == 1 && args[0] == "default" {
		data, err := config.Marshal(config.Default())
		if err != nil {
			return err
		}
		_, err = io.WriteString(stdout, dropInHeader+string(data))
		return err
	}
	if len(args) < 1 || len(args) > 2 || (args[0] != "check" && args[0] != "show") {
		return errors.New(configUsage)
	}
	path, explicit := config.DefaultPath, false
	if len(args) == 2 {
		path, explicit = args[1], true
	}
	cfg, err := config.Load(path, explicit)
	if err != nil {
		return err
	}
	if args[0] == "show" {
		data, err := config.Marshal(cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "# merged from: %s\n", cmp.Or(strings.Join(cfg.Files, ", "), "no file: the embedded defaults"))
		_, err = stdout.Write(data)
		return err
	}
	if len(cfg.Files) == 0 {
		fmt.Fprintf(stdout, "%s: missing, no drop-ins in %s: defaults ok\n", path, config.DropInDir(path))
	}
	for _, f := range cfg.Files {
		fmt.Fprintf(stdout, "%s: ok\n", f)
	}
	// the files the config names that berthd refuses to start without.
	if p := cfg.Registry.SignaturePolicy; p != "" {
		if _, err := sigpolicy.Load(p); err != nil {
			return fmt.Errorf("registry.signature_policy: %w", err)
		}
		fmt.Fprintf(stdout, "%s: ok (signature policy)\n", p)
	}
	return nil
}

// newLogger returns the daemon's logger and the level SIGHUP can change.
func newLogger(c config.Log, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	level := new(slog.LevelVar)
	level.Set(lvl)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), level
	}
	return slog.New(slog.NewTextHandler(w, opts)), level
}

// helperBinary finds berth-shim or berth-pause: the configured path, else
// next to berthd (how `make install` and tests lay them out), else PATH.
func helperBinary(configured, name string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("find %s (set runtime.%s_path): %w", name, name[len("berth-"):], err)
	}
	return p, nil
}

// processStart is taken when the package initialises, close to the exec: a
// restart's time to serving is what kubelet waits for.
var processStart = time.Now()

// cpuUsed is the CPU time berthd has used so far: beside the wall time of
// a startup, it tells work from waiting for a loaded node's CPU.
func cpuUsed() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func serve(cfg config.Config, src configSource, stderr io.Writer) error {
	log, level := newLogger(cfg.Log, stderr)
	slog.SetDefault(log)
	// Before anything is started, so no child inherits the notify socket.
	sd := newSDNotifier(log)
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	operator := newOps(src, cfg, level, log)

	shimPath, err := helperBinary(cfg.Runtime.ShimPath, "berth-shim")
	if err != nil {
		return err
	}
	pausePath, err := helperBinary(cfg.Runtime.PausePath, "berth-pause")
	if err != nil {
		return err
	}
	tracer, err := tracing.New(ctx, cfg.Tracing, server.Version)
	if err != nil {
		return err
	}
	defer flushTraces(tracer, log)
	for _, d := range []string{cfg.Root, cfg.State} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	db, err := bolt.Open(filepath.Join(cfg.Root, "meta.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("open metadata (is another berthd running?): %w", err)
	}
	defer db.Close()

	st, err := store.Open(db)
	if err != nil {
		return err
	}
	nriHost, err := nri.New(nri.Options{
		Config: cfg.NRI, Name: "berth", Version: server.Version, Logger: log,
		InjectCDI: specgen.NewCDIRegistry(cfg.CDI.SpecDirs).InjectDevices,
	})
	if err != nil {
		return err
	}
	mx := metrics.New(metrics.Options{
		States: st.Counts, Shims: shimCounter(filepath.Join(cfg.State, "s")),
		Collectors: nriHost.Metrics().Collectors(),
	})
	imageSvc, err := imagesvc.New(ctx, imagesvc.Options{
		Root: cfg.Root, DB: db, InsecureHosts: cfg.Registry.InsecureHosts, Logger: log,
		HostsDir: cfg.Registry.ConfigPath, PinnedImages: cfg.Registry.PinnedImages,
		AuthFile: cfg.Registry.AuthFile, SignaturePolicy: cfg.Registry.SignaturePolicy, Limits: imageLimits(cfg.Registry),
		UsageDir: cfg.State,
	})
	if err != nil {
		return fmt.Errorf("start image service: %w", err)
	}
	images := meteredImages{Service: imageSvc, obs: mx}
	sandboxes, err := sandbox.New(sandbox.Options{
		NetNSDir: filepath.Join(cfg.State, "netns"), PausePath: pausePath, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("start sandbox controller: %w", err)
	}
	network, err := newSwappableNetwork(ctx, netOptions(cfg, log))
	if err != nil {
		return fmt.Errorf("start network manager: %w", err)
	}
	defer network.Close()
	operator.network = network

	streams, err := streaming.New(streaming.Options{
		Address: cfg.Streaming.Address, TLSCert: cfg.Streaming.TLSCert, TLSKey: cfg.Streaming.TLSKey, Logger: log,
	})
	if err != nil {
		return err
	}
	defer streams.Close()
	srv, err := server.New(server.Options{
		Config: cfg, Store: st, Sandboxes: sandboxes, Images: images, Network: network,
		ShimPath: shimPath, Logger: log, Streaming: streams, NRI: nriHost,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	// Before recovery, so that a restart's CPU can be profiled and images
	// loaded while hundreds of containers are reattached.
	admin, err := serveAdmin(adminSocket(cfg), imageSvc, log)
	if err != nil {
		return err
	}
	defer func() {
		// An import still running gets the shutdown grace, as CRI calls do.
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if admin.Shutdown(sctx) != nil {
			_ = admin.Close()
		}
	}()
	if err := srv.Recover(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	// After recovery, whose CPU a walk of every container's writable
	// layer would take: a restart hands out the figures the last process
	// kept (younger than a minute) and refreshes them in the background.
	go imageSvc.WarmUsage(ctx)
	// After recovery, so a plugin's first synchronisation sees every pod.
	if err := nriHost.Start(srv.NRIRuntime()); err != nil {
		return err
	}
	defer nriHost.Stop()
	go func() {
		if err := streams.Serve(srv.StreamRuntime()); err != nil {
			log.Error("streaming server stopped", "error", err)
		}
	}()
	log.Info("streaming server listening", "address", streams.Addr().String())

	lis, err := listen(cfg.GRPC.Address)
	if err != nil {
		return err
	}
	g := grpc.NewServer(append(tracer.ServerOptions(),
		grpc.ForceServerCodecV2(srv.Codec()),
		grpc.ChainUnaryInterceptor(interceptor.Unary(log, mx.ObserveRequest)),
		grpc.ChainStreamInterceptor(interceptor.Stream(log, mx.ObserveRequest)),
		grpc.MaxRecvMsgSize(16<<20),
		grpc.MaxSendMsgSize(16<<20),
	)...)
	runtime.RegisterRuntimeServiceServer(g, srv)
	runtime.RegisterImageServiceServer(g, srv)

	if cfg.Metrics.Address != "" {
		ms, err := mx.Serve(cfg.Metrics.Address, log)
		if err != nil {
			return err
		}
		log.Info("metrics endpoint serving", "address", ms.Addr().String())
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = ms.Shutdown(sctx)
		}()
	}
	// Signals stay handled through shutdown: a SIGHUP then must not kill us.
	opsCtx, stopOps := context.WithCancel(context.Background())
	defer stopOps()
	go operator.run(opsCtx)

	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	log.Info("berthd serving", "address", cfg.GRPC.Address, "version", server.Version,
		"startup", time.Since(processStart), "startup_cpu", cpuUsed())
	// Recovery is done and the socket accepts: systemctl start returns.
	sd.send("READY=1\nSTATUS=serving the CRI on " + cfg.GRPC.Address)
	go sd.keepAlive(opsCtx)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sd.send("STOPPING=1\nSTATUS=shutting down; containers keep running")
	// Containers are never stopped on shutdown: their shims outlive us.
	log.Info("shutting down; containers keep running", "grace", shutdownGrace)
	gracefulStop(g, shutdownGrace, log)
	log.Info("berthd stopped")
	return nil
}

// flushTraces exports the spans still buffered, the last of them those of
// the calls the graceful stop waited for.
func flushTraces(p *tracing.Provider, log *slog.Logger) {
	if !p.Enabled() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Warn("flush traces", "error", err)
	}
}

// listen serves the CRI socket: root and its group (kubelet, crictl).
func listen(path string) (net.Listener, error) { return listenMode(path, 0o660) }

func listenMode(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if err := checkStaleSocket(path); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	// The socket is created with the final mode so no client can connect
	// in a window where it is wider.
	old := unix.Umask(int(0o777 &^ mode))
	lis, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return lis, nil
}
