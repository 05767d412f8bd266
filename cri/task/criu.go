package task

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	shimruntime "github.com/berth-runtime/berth/shim/runtime"
)

// CRIUCandidates are where a working CRIU is looked for when the config
// names none, in order: where `make criu` installs one (Debian 12's own,
// first in PATH otherwise, fails on current kernels), then PATH.
var CRIUCandidates = []string{"/usr/local/sbin/criu", "/usr/local/lib/berth/criu", "criu"}

// CRIUProbe finds, once and in the background, a CRIU that can dump and
// restore here. berthd starts it at once, so that CheckpointRestoreReady
// is known early and a CRIU that hangs makes checkpoint calls fail at once
// instead of hanging them.
type CRIUProbe struct {
	done   chan struct{} // closed once path and err are set
	cancel context.CancelFunc
	path   string
	err    error
}

// ProbeCRIU starts probing each candidate with shimruntime.ProbeCRIU, each
// bounded by timeout, in dir; proof is the file that remembers a success
// until reboot.
func ProbeCRIU(candidates []string, dir, proof string, timeout time.Duration, log *slog.Logger) *CRIUProbe {
	p := &CRIUProbe{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		defer close(p.done)
		begin := time.Now()
		// Also when a proof spares the probe: a berthd killed mid-probe
		// before this start left its CRIU running.
		shimruntime.ClearStaleProbes(dir)
		p.path, p.err = findCRIU(ctx, candidates, dir, proof, timeout)
		if p.err != nil {
			log.Warn("checkpoint/restore unavailable", "error", p.err)
			return
		}
		log.Info("checkpoint/restore ready", "criu", p.path, "probe", time.Since(begin).Round(time.Millisecond))
	}()
	return p
}

// Get returns the working CRIU, waiting for the probe (itself bounded)
// while ctx allows.
func (p *CRIUProbe) Get(ctx context.Context) (string, error) {
	select {
	case <-p.done:
		return p.path, p.err
	case <-ctx.Done():
		return "", fmt.Errorf("checkpoint/restore unavailable: CRIU is still being probed: %w", errdefs.ErrFailedPrecondition)
	}
}

// Ready reports the probe's result without waiting; probing is false
// while it runs.
func (p *CRIUProbe) Ready() (probing bool, err error) {
	select {
	case <-p.done:
		return false, p.err
	default:
		return true, nil
	}
}

// Stop ends a probe still running (its processes killed, its scratch
// files removed) and waits for it.
func (p *CRIUProbe) Stop() {
	p.cancel()
	<-p.done
}

// criuProbeTimeout caps each probe (a dump and a restore of a small
// shell take about a second) below runtime.checkpoint_timeout, which is
// sized for real containers.
const criuProbeTimeout = 30 * time.Second

// criuProbeTries is how often a candidate is probed before it is judged.
const criuProbeTries = 2

func findCRIU(ctx context.Context, candidates []string, dir, proofFile string, timeout time.Duration) (string, error) {
	var why []string
	for _, c := range candidates {
		path, err := exec.LookPath(c)
		if err != nil {
			if len(candidates) == 1 {
				why = append(why, err.Error())
			}
			continue
		}
		proof, perr := proofOf(path)
		if perr == nil && proof.holds(proofFile) {
			return path, nil
		}
		// A second try before giving up: one probe in the e2e suite, with
		// two daemons probing at once on a loaded machine, saw a restored
		// copy that never ran on; the next never has.
		for try := range criuProbeTries {
			pctx, cancel := context.WithTimeout(ctx, min(timeout, criuProbeTimeout))
			err = shimruntime.ProbeCRIU(pctx, path, dir)
			cancel()
			if err == nil {
				if perr == nil {
					proof.save(proofFile)
				}
				return path, nil
			}
			if ctx.Err() != nil || try == criuProbeTries-1 {
				break
			}
		}
		why = append(why, err.Error())
	}
	if len(why) == 0 {
		return "", fmt.Errorf("checkpoint/restore unavailable: no CRIU found (run `make criu`): %w", errdefs.ErrFailedPrecondition)
	}
	return "", fmt.Errorf("checkpoint/restore unavailable: no working CRIU (%s; run `make criu`): %w",
		strings.Join(why, "; "), errdefs.ErrFailedPrecondition)
}

// criuProof records a probe's success until reboot (it lives in the state
// dir), so that restarting berthd does not probe again: the same CRIU
// binary on the same kernel in the same boot works as it did. A failure is
// never recorded; the next start probes again.
type criuProof struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mod_time"`
	BootID  string `json:"boot_id"`
}

func proofOf(path string) (criuProof, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return criuProof{}, err
	}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return criuProof{}, err
	}
	return criuProof{Path: path, Size: fi.Size(), ModTime: fi.ModTime().UnixNano(), BootID: strings.TrimSpace(string(boot))}, nil
}

// holds reports whether file records this very proof.
func (p criuProof) holds(file string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	var got criuProof
	return json.Unmarshal(b, &got) == nil && got == p
}

// save records p in file, atomically; a failure only costs a probe later.
func (p criuProof) save(file string) {
	b, err := json.Marshal(p)
	if err != nil {
		return
	}
	tmp := file + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, file)
	}
}
