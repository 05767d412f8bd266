package netplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
)

// pendingVersion is the on-disk format of pendingRecord.
const pendingVersion = 1

// pendingRecord is written before a CNI ADD starts and removed once a DEL
// for it succeeded. libcni caches an attachment only after the whole chain
// succeeded, so without this record an ADD interrupted half way (plugin
// failure whose undo failed too, or berthd killed) would leave an IPAM
// address that nothing ever releases on plugins without CNI GC.
type pendingRecord struct {
	Version        int                    `json:"version"`
	ContainerID    string                 `json:"containerId"`
	IfName         string                 `json:"ifName"`
	NetNS          string                 `json:"netns,omitempty"`
	Network        string                 `json:"network"`
	Config         []byte                 `json:"config"` // self-contained conflist
	CniArgs        [][2]string            `json:"cniArgs,omitempty"`
	CapabilityArgs map[string]interface{} `json:"capabilityArgs,omitempty"`
}

type pendingStore struct {
	dir string
}

func (s pendingStore) path(id string) string {
	return filepath.Join(s.dir, id+".json")
}

// put writes rec atomically: temp file, fsync, rename, fsync of the dir.
func (s pendingStore) put(rec pendingRecord) error {
	rec.Version = pendingVersion
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode pending cni record for sandbox %q: %w", rec.ContainerID, err)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create cni pending dir: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, "."+rec.ContainerID+".tmp")
	if err != nil {
		return fmt.Errorf("write pending cni record for sandbox %q: %w", rec.ContainerID, err)
	}
	defer os.Remove(tmp.Name()) // gone after a successful rename
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path(rec.ContainerID))
	}
	if err != nil {
		return fmt.Errorf("write pending cni record for sandbox %q: %w", rec.ContainerID, err)
	}
	if d, err := os.Open(s.dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// get returns the record for id, or nil when there is none.
func (s pendingStore) get(id string) (*pendingRecord, error) {
	data, err := os.ReadFile(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pending cni record for sandbox %q: %w", id, err)
	}
	var rec pendingRecord
	if err := json.Unmarshal(data, &rec); err != nil || rec.Version != pendingVersion || rec.ContainerID != id {
		return nil, fmt.Errorf("pending cni record for sandbox %q is corrupt: %w", id, errdefs.ErrDataLoss)
	}
	return &rec, nil
}

func (s pendingStore) remove(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove pending cni record for sandbox %q: %w", id, err)
	}
	return nil
}

// ids lists the sandboxes that have a pending record.
func (s pendingStore) ids() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list cni pending dir: %w", err)
	}
	var ids []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") {
			continue
		}
		ids = append(ids, strings.TrimSuffix(name, ".json"))
	}
	return ids, nil
}
