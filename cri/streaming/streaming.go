// Package streaming is berthd's glue to k8s.io/cri-streaming: it runs the
// HTTP server whose URLs the Exec, Attach and PortForward RPCs hand out
// (SPDY and WebSocket, as that library serves them), and dials ports inside
// a pod's network namespace for port-forwarding. What an exec or attach
// does is the Runtime given to Serve (cri/server's).
package streaming

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	lib "k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// TerminalSize is a terminal's size in character cells.
type TerminalSize = remotecommand.TerminalSize

// Runtime does the work behind a streaming URL. ctx ends when the client
// goes away. A non-zero exit of an exec is reported by returning an error
// that implements k8s.io/utils/exec.ExitError (exec.CodeExitError).
type Runtime interface {
	Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan TerminalSize) error
	Attach(ctx context.Context, containerID string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan TerminalSize) error
	PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error
}

// Options configure the server.
type Options struct {
	// Address is host:port; port 0 picks a free one.
	Address string
	// TLSCert and TLSKey (PEM files) switch on TLS; both or neither.
	TLSCert, TLSKey string
	Logger          *slog.Logger
}

// Server is the streaming server. It listens from New on, so the URLs it
// hands out carry the real port; it serves once Serve is called.
type Server struct {
	lib  lib.Server
	lis  net.Listener
	http *http.Server
	log  *slog.Logger
	// rt is set by Serve; requests before it fail.
	rt    atomic.Pointer[Runtime]
	flags flagStore
}

// New listens on o.Address and prepares the server.
func New(o Options) (*Server, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, fmt.Errorf("streaming tls: cert and key go together: %w", errdefs.ErrInvalidArgument)
	}
	var tlsCfg *tls.Config
	if o.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load streaming tls key pair: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	lis, err := net.Listen("tcp", o.Address)
	if err != nil {
		return nil, fmt.Errorf("listen for streaming on %q: %w", o.Address, err)
	}
	base := &url.URL{Scheme: "http", Host: lis.Addr().String()}
	if tlsCfg != nil {
		base.Scheme = "https"
	}
	cfg := lib.DefaultConfig
	cfg.Addr = lis.Addr().String()
	cfg.BaseURL = base
	cfg.TLSConfig = tlsCfg
	s := &Server{lis: lis, log: log}
	ls, err := lib.NewServer(cfg, dispatcher{s})
	if err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("create streaming server: %w", err)
	}
	s.lib = ls
	s.http = &http.Server{
		Handler:           s.flags.withFlags(ls),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnContext:       connContext,
	}
	s.lis = closeNotifyingListener{lis}
	return s, nil
}

// A streaming session hijacks its connection, after which net/http no
// longer cancels the request's context when the client goes away. Each
// connection therefore carries a context of its own, the base of its
// requests' contexts, cancelled when the connection is closed: the SPDY and
// WebSocket layers close it once the client is gone, so an exec whose client
// left is killed even if it never writes.
type closeNotifyingListener struct{ net.Listener }

func (l closeNotifyingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &notifyingConn{Conn: c, ctx: ctx, cancel: cancel}, nil
}

type notifyingConn struct {
	net.Conn
	ctx    context.Context
	cancel context.CancelFunc
}

func (c *notifyingConn) Close() error {
	c.cancel()
	return c.Conn.Close()
}

func connContext(ctx context.Context, c net.Conn) context.Context {
	nc, ok := c.(*notifyingConn)
	if !ok {
		if tc, isTLS := c.(*tls.Conn); isTLS {
			nc, ok = tc.NetConn().(*notifyingConn)
		}
	}
	if !ok {
		return ctx
	}
	merged, cancel := context.WithCancel(ctx)
	context.AfterFunc(nc.ctx, cancel)
	return merged
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Serve serves rt's streams until Close.
func (s *Server) Serve(rt Runtime) error {
	s.rt.Store(&rt)
	var err error
	if s.http.TLSConfig != nil {
		err = s.http.ServeTLS(s.lis, "", "")
	} else {
		err = s.http.Serve(s.lis)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the server and ends open streams.
func (s *Server) Close() error {
	return s.http.Close()
}

// GetExec returns the URL of an exec session.
func (s *Server) GetExec(r *runtime.ExecRequest) (*runtime.ExecResponse, error) {
	resp, err := s.lib.GetExec(r)
	if err == nil {
		s.flags.remember(resp.Url, streamFlags{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr})
	}
	return resp, err
}

// GetAttach returns the URL of an attach session.
func (s *Server) GetAttach(r *runtime.AttachRequest) (*runtime.AttachResponse, error) {
	resp, err := s.lib.GetAttach(r)
	if err == nil {
		s.flags.remember(resp.Url, streamFlags{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr})
	}
	return resp, err
}

// GetPortForward returns the URL of a port-forward session.
func (s *Server) GetPortForward(r *runtime.PortForwardRequest) (*runtime.PortForwardResponse, error) {
	return s.lib.GetPortForward(r)
}

// dispatcher hands the library's calls to the Runtime given to Serve.
type dispatcher struct{ s *Server }

var errNotServing = fmt.Errorf("streaming server not serving yet: %w", errdefs.ErrUnavailable)

func (d dispatcher) runtime() (Runtime, error) {
	rt := d.s.rt.Load()
	if rt == nil {
		return nil, errNotServing
	}
	return *rt, nil
}

func (d dispatcher) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan TerminalSize) error {
	rt, err := d.runtime()
	if err != nil {
		return err
	}
	in, out, errw = requested(ctx, in, out, errw)
	return rt.Exec(ctx, id, cmd, in, out, errw, tty, resize)
}

func (d dispatcher) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan TerminalSize) error {
	rt, err := d.runtime()
	if err != nil {
		return err
	}
	in, out, errw = requested(ctx, in, out, errw)
	return rt.Attach(ctx, id, in, out, errw, tty, resize)
}

func (d dispatcher) PortForward(ctx context.Context, id string, port int32, stream io.ReadWriteCloser) error {
	rt, err := d.runtime()
	if err != nil {
		return err
	}
	return rt.PortForward(ctx, id, port, stream)
}

// requested drops the streams the session did not ask for.
func requested(ctx context.Context, in io.Reader, out, errw io.WriteCloser) (io.Reader, io.WriteCloser, io.WriteCloser) {
	f, ok := flagsFrom(ctx)
	if !ok {
		return in, out, errw
	}
	if !f.stdin {
		in = nil
	}
	if !f.stdout {
		out = nil
	}
	if !f.stderr {
		errw = nil
	}
	return in, out, errw
}
