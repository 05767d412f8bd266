package main

// admin.go is berthd's local admin API: HTTP on a unix socket only root
// can reach (<state>/admin.sock, mode 0600, and the peer's uid checked),
// separate from the CRI socket kubelet's group may use. It serves what
// the CRI has no call for and an operator needs while berthd runs:
// importing an image archive, which `berthd image load` sends here as
// containerd's `ctr images import` talks to containerd (without a running
// berthd, image load opens the store itself), and Go's profiles under
// /debug/pprof/, as containerd serves them on its debug socket.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/imagesvc"
)

// adminSocket is where berthd serves its admin API.
func adminSocket(cfg config.Config) string {
	return filepath.Join(cfg.State, "admin.sock")
}

// loadPath is the admin API's image import: POST an archive (OCI layout
// tar or docker save tar), get a loadResult.
const loadPath = "/v1/images/load"

// loadResult is the answer to a load: the images loaded, and why the
// rest failed.
type loadResult struct {
	Images []loadedImage `json:"images"`
	Error  string        `json:"error,omitempty"`
}

type loadedImage struct {
	ID       string   `json:"id"`
	RepoTags []string `json:"repo_tags"`
}

// imageLoader is what the admin API needs of the image service.
type imageLoader interface {
	Load(ctx context.Context, r io.Reader) ([]imagesvc.Image, error)
}

var _ imageLoader = (*imagesvc.Service)(nil)

type peerUIDKey struct{}

// serveAdmin listens on path and serves the admin API until Shutdown.
func serveAdmin(path string, images imageLoader, log *slog.Logger) (*http.Server, error) {
	lis, err := listenMode(path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+loadPath, func(w http.ResponseWriter, r *http.Request) {
		res := loadResult{Images: []loadedImage{}}
		if !fromRoot(r) {
			res.Error = "the admin API is for root"
			writeResult(w, http.StatusForbidden, res)
			return
		}
		imgs, err := images.Load(r.Context(), r.Body)
		for _, img := range imgs {
			res.Images = append(res.Images, loadedImage{ID: img.ID, RepoTags: img.RepoTags})
			log.InfoContext(r.Context(), "image loaded", "id", img.ID, "tags", img.RepoTags)
		}
		if err != nil {
			res.Error = err.Error()
			log.WarnContext(r.Context(), "image load failed", "error", err)
			writeResult(w, httpCode(err), res)
			return
		}
		writeResult(w, http.StatusOK, res)
	})
	// Profiles of a daemon under load are how its CPU is found (the
	// full-node bench); they say what berthd runs, so root only too.
	profiles := http.NewServeMux()
	profiles.HandleFunc("/debug/pprof/", pprof.Index)
	profiles.HandleFunc("/debug/pprof/profile", pprof.Profile)
	profiles.HandleFunc("/debug/pprof/trace", pprof.Trace)
	profiles.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	profiles.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		if !fromRoot(r) {
			http.Error(w, "the admin API is for root", http.StatusForbidden)
			return
		}
		profiles.ServeHTTP(w, r)
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if uid, err := peerUID(c); err == nil {
				return context.WithValue(ctx, peerUIDKey{}, uid)
			}
			return ctx
		},
	}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin API stopped", "error", err)
		}
	}()
	return srv, nil
}

// fromRoot reports whether the request came from root or berthd's own
// user, by the peer credentials of its connection.
func fromRoot(r *http.Request) bool {
	uid, ok := r.Context().Value(peerUIDKey{}).(int)
	return ok && (uid == 0 || uid == os.Geteuid())
}

func writeResult(w http.ResponseWriter, code int, res loadResult) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(res)
}

// peerUID is the uid of the process at the other end of a unix socket.
func peerUID(c net.Conn) (int, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return int(cred.Uid), nil
}

// httpCode maps an errdefs error to the status the client maps back.
func httpCode(err error) int {
	switch {
	case errdefs.IsInvalidArgument(err):
		return http.StatusBadRequest
	case errdefs.IsResourceExhausted(err):
		return http.StatusRequestEntityTooLarge
	case errdefs.IsCanceled(err):
		return 499 // the client went away
	}
	return http.StatusInternalServerError
}

// errNoDaemon means no berthd serves the admin socket.
var errNoDaemon = errors.New("no berthd serves the admin socket")

// loadViaDaemon sends the archive in to the berthd serving sock and
// prints what it loaded. It returns errNoDaemon, having read nothing of
// in, when no berthd listens there.
func loadViaDaemon(ctx context.Context, sock string, in io.Reader, stdout io.Writer) error {
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", sock)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
		return errNoDaemon
	}
	if err != nil {
		return fmt.Errorf("connect to berthd's admin socket: %w", err)
	}
	used := false
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return nil, errors.New("admin connection already used")
			}
			used = true
			return conn, nil
		},
		DisableKeepAlives: true,
	}}
	// The body must not be closed by the client: it may be our stdin.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://berthd"+loadPath, io.NopCloser(in))
	if err != nil {
		conn.Close()
		return err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("load through berthd: %w", err)
	}
	defer resp.Body.Close()
	var res loadResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&res); err != nil {
		return fmt.Errorf("load through berthd: %s: bad answer: %w", resp.Status, err)
	}
	for _, img := range res.Images {
		fmt.Fprintf(stdout, "loaded %s %v\n", img.ID, img.RepoTags)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("load through berthd: %s", cmp.Or(res.Error, strings.TrimSpace(resp.Status)))
	}
	return nil
}
