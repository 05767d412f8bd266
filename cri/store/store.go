// Package store owns berthd's record of pod sandboxes and containers: what
// kubelet created, persisted in bbolt so that a daemon killed at any point
// and restarted still knows every object. Metadata is immutable once added
// and holds the CRI config decoded once; status changes go through
// UpdateSandboxStatus and UpdateContainerStatus, which persist before they
// publish. Reads hand out copies whose status is their own. Records carry
// a version that Open reads and migrates (codec.go).
package store

import (
	"fmt"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var (
	bucketSandboxes  = []byte("sandboxes")
	bucketContainers = []byte("containers")
)

// Store is the sandbox and container table.
type Store struct {
	db *bolt.DB

	mu         sync.RWMutex // guards every field below
	sandboxes  map[string]Sandbox
	containers map[string]Container
	// names maps a reserved name (sandbox or container) to the ID that
	// holds it, so a retried create finds the object that won.
	names map[string]string
	// sandboxGen and containerGen count the changes made to each kind of
	// record (Generations).
	sandboxGen, containerGen uint64
}

// Open loads every record from db, migrating records of an older version
// and writing them back in the current one. The load is a read
// transaction: a write one, even with nothing to write, costs a restart
// bbolt's commit (a freelist page and two fdatasyncs); one follows only
// when the buckets are new or a record was migrated.
func Open(db *bolt.DB) (*Store, error) {
	s := &Store{
		db:         db,
		sandboxes:  map[string]Sandbox{},
		containers: map[string]Container{},
		names:      map[string]string{},
	}
	var sbMigrated, ctrMigrated map[string][]byte
	missing := false
	err := db.View(func(tx *bolt.Tx) error {
		sbs, ctrs := tx.Bucket(bucketSandboxes), tx.Bucket(bucketContainers)
		missing = sbs == nil || ctrs == nil
		var err error
		if sbMigrated, err = load(sbs, "sandbox", decodeSandbox, encodeSandbox, func(sb Sandbox) {
			s.sandboxes[sb.ID] = sb
			s.names[sb.Name] = sb.ID
		}); err != nil {
			return err
		}
		ctrMigrated, err = load(ctrs, "container", decodeContainer, encodeContainer, func(c Container) {
			s.containers[c.ID] = c
			s.names[c.Name] = c.ID
		})
		return err
	})
	if err == nil && (missing || len(sbMigrated) > 0 || len(ctrMigrated) > 0) {
		err = db.Update(func(tx *bolt.Tx) error {
			if err := putAll(tx, bucketSandboxes, "sandbox", sbMigrated); err != nil {
				return err
			}
			return putAll(tx, bucketContainers, "container", ctrMigrated)
		})
	}
	if err != nil {
		return nil, fmt.Errorf("load metadata: %w", err)
	}
	return s, nil
}

// load hands every record of b (none if b is nil), decoded, to keep, and
// returns those that decode migrated, encoded in the current version, for
// Open to write back. Records are decoded on every CPU: at a restart
// nothing else runs yet, and decoding (JSON, then the CRI config's
// protobuf) is most of the store's part of it (BenchmarkOpenKubeletNode).
func load[R any](b *bolt.Bucket, kind string, decode func([]byte) (R, bool, error), encode func(R) ([]byte, error), keep func(R)) (map[string][]byte, error) {
	if b == nil {
		return nil, nil
	}
	// bbolt's keys and values stay valid until the transaction ends.
	var keys, vals [][]byte
	if err := b.ForEach(func(k, v []byte) error {
		keys, vals = append(keys, k), append(vals, v)
		return nil
	}); err != nil {
		return nil, err
	}
	type result struct {
		rec R
		old bool
		err error
	}
	res := make([]result, len(vals))
	workers := min(goruntime.GOMAXPROCS(0), (len(vals)+63)/64)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(vals); i += workers {
				r := &res[i]
				r.rec, r.old, r.err = decode(vals[i])
			}
		})
	}
	wg.Wait()
	var migrated map[string][]byte
	for i, r := range res {
		if r.err != nil {
			return nil, fmt.Errorf("decode %s %q: %w", kind, keys[i], r.err)
		}
		keep(r.rec)
		if r.old {
			if migrated == nil {
				migrated = map[string][]byte{}
			}
			var err error
			if migrated[string(keys[i])], err = encode(r.rec); err != nil {
				return nil, fmt.Errorf("encode migrated %s %q: %w", kind, keys[i], err)
			}
		}
	}
	return migrated, nil
}

// putAll creates bucket if it is missing and writes recs into it.
func putAll(tx *bolt.Tx, bucket []byte, kind string, recs map[string][]byte) error {
	b, err := tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return err
	}
	for k, v := range recs {
		if err := b.Put([]byte(k), v); err != nil {
			return fmt.Errorf("rewrite migrated %s %q: %w", kind, k, err)
		}
	}
	return nil
}

// Reserve claims name for id. If another object holds it, the error wraps
// ErrAlreadyExists and the holder's ID is returned.
func (s *Store) Reserve(name, id string) (holder string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h, ok := s.names[name]; ok && h != id {
		return h, fmt.Errorf("name %q is reserved for %q: %w", name, h, errdefs.ErrAlreadyExists)
	}
	s.names[name] = id
	return "", nil
}

// Release frees name if id holds it.
func (s *Store) Release(name, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[name] == id {
		delete(s.names, name)
	}
}

func put(db *bolt.DB, bucket []byte, id string, data []byte) error {
	return db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Put([]byte(id), data)
	})
}

func del(db *bolt.DB, bucket []byte, id string) error {
	return db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Delete([]byte(id))
	})
}

// resolve finds the one ID in ids that equals key or starts with it, as
// operators type truncated IDs into crictl.
func resolve[T any](m map[string]T, key, kind string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("%s id is empty: %w", kind, errdefs.ErrInvalidArgument)
	}
	if _, ok := m[key]; ok {
		return key, nil
	}
	var found string
	for id := range m {
		if strings.HasPrefix(id, key) {
			if found != "" {
				return "", fmt.Errorf("%s id prefix %q is ambiguous: %w", kind, key, errdefs.ErrInvalidArgument)
			}
			found = id
		}
	}
	if found == "" {
		return "", fmt.Errorf("%s %q: %w", kind, key, errdefs.ErrNotFound)
	}
	return found, nil
}

// AddSandbox persists a new sandbox record. The store keeps its own copy
// of the status; the metadata, Config included, must not change after.
func (s *Store) AddSandbox(sb Sandbox) error {
	if sb.Config == nil {
		sb.Config = &runtime.PodSandboxConfig{}
	}
	// A copy of its own, so the caller's request stays the caller's.
	sb.Config = proto.Clone(sb.Config).(*runtime.PodSandboxConfig)
	var err error
	if sb.rawConfig, err = encodeConfig(sb.Config); err != nil {
		return fmt.Errorf("sandbox %q: %w", sb.ID, err)
	}
	sb = sb.clone()
	data, err := encodeSandbox(sb)
	if err != nil {
		return fmt.Errorf("encode sandbox %q: %w", sb.ID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sandboxes[sb.ID]; ok {
		return fmt.Errorf("sandbox %q: %w", sb.ID, errdefs.ErrAlreadyExists)
	}
	if err := put(s.db, bucketSandboxes, sb.ID, data); err != nil {
		return fmt.Errorf("persist sandbox %q: %w", sb.ID, err)
	}
	s.sandboxes[sb.ID] = sb
	s.names[sb.Name] = sb.ID
	s.sandboxGen++
	return nil
}

// Sandbox returns a copy of the sandbox with this ID or unique ID prefix.
func (s *Store) Sandbox(id string) (Sandbox, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	full, err := resolve(s.sandboxes, id, "sandbox")
	if err != nil {
		return Sandbox{}, err
	}
	return s.sandboxes[full].clone(), nil
}

// Sandboxes returns copies of every sandbox, oldest first.
func (s *Store) Sandboxes() []Sandbox {
	s.mu.RLock()
	out := make([]Sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		out = append(out, sb.clone())
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt < out[j].CreatedAt })
	return out
}

// EachSandbox calls f with every sandbox record, in no order, under the
// store's read lock and without a copy: kubelet's relist reads a few
// fields of every record each second, and Sandboxes copies and sorts them
// all. f must only read, must not keep sb past the call (its meta, which
// never changes, it may) and must not call the store.
func (s *Store) EachSandbox(f func(sb *Sandbox)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var sb Sandbox // one copy reused: a loop variable would escape per record
	for _, sb = range s.sandboxes {
		f(&sb)
	}
}

// Generations returns how many changes (a record added, its status
// updated, or removed) the sandbox and the container records have had
// since the store was opened. A reader that saw the records at one
// generation knows they are the same while it is unchanged: kubelet's
// relist asks every second for lists that rarely change.
func (s *Store) Generations() (sandboxes, containers uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.sandboxGen, s.containerGen
}

// UpdateSandboxStatus is the one way a sandbox record changes: fn gets a
// copy of the status and returns the new one, which is persisted before
// readers see it. An error from fn or from persisting changes nothing.
func (s *Store) UpdateSandboxStatus(id string, fn func(SandboxStatus) (SandboxStatus, error)) (Sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok {
		return Sandbox{}, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	st, err := fn(sb.Status.clone())
	if err != nil {
		return Sandbox{}, err
	}
	// The result may share slices with the caller's variables.
	sb.Status = st.clone()
	data, err := encodeSandbox(sb)
	if err == nil {
		err = put(s.db, bucketSandboxes, id, data)
	}
	if err != nil {
		return Sandbox{}, fmt.Errorf("persist sandbox %q: %w", id, err)
	}
	s.sandboxes[id] = sb
	s.sandboxGen++
	return sb.clone(), nil
}

// DeleteSandbox forgets the sandbox and frees its name.
func (s *Store) DeleteSandbox(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok {
		return nil
	}
	if err := del(s.db, bucketSandboxes, id); err != nil {
		return fmt.Errorf("delete sandbox %q: %w", id, err)
	}
	delete(s.sandboxes, id)
	s.sandboxGen++
	if s.names[sb.Name] == id {
		delete(s.names, sb.Name)
	}
	return nil
}

// AddContainer persists a new container record. The store keeps its own
// copy of the status; the metadata, Config included, must not change after.
func (s *Store) AddContainer(c Container) error {
	if c.Config == nil {
		c.Config = &runtime.ContainerConfig{}
	}
	c.Config = proto.Clone(c.Config).(*runtime.ContainerConfig)
	var err error
	if c.rawConfig, err = encodeConfig(c.Config); err != nil {
		return fmt.Errorf("container %q: %w", c.ID, err)
	}
	c = c.clone()
	data, err := encodeContainer(c)
	if err != nil {
		return fmt.Errorf("encode container %q: %w", c.ID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[c.ID]; ok {
		return fmt.Errorf("container %q: %w", c.ID, errdefs.ErrAlreadyExists)
	}
	if err := put(s.db, bucketContainers, c.ID, data); err != nil {
		return fmt.Errorf("persist container %q: %w", c.ID, err)
	}
	s.containers[c.ID] = c
	s.names[c.Name] = c.ID
	s.containerGen++
	return nil
}

// Container returns a copy of the container with this ID or unique prefix.
func (s *Store) Container(id string) (Container, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	full, err := resolve(s.containers, id, "container")
	if err != nil {
		return Container{}, err
	}
	return s.containers[full].clone(), nil
}

// Containers returns copies of every container, oldest first.
func (s *Store) Containers() []Container {
	s.mu.RLock()
	out := make([]Container, 0, len(s.containers))
	for _, c := range s.containers {
		out = append(out, c.clone())
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt < out[j].CreatedAt })
	return out
}

// ContainersOf returns copies of the containers of one sandbox.
// Only the pod's records are copied and sorted: a pod-stats list at 250
// pods used to copy and sort every container of the node once per pod.
func (s *Store) ContainersOf(sandboxID string) []Container {
	var out []Container
	s.mu.RLock()
	for _, c := range s.containers {
		if c.SandboxID == sandboxID {
			out = append(out, c.clone())
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt < out[j].CreatedAt })
	return out
}

// EachContainer is EachSandbox for container records.
func (s *Store) EachContainer(f func(c *Container)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var c Container
	for _, c = range s.containers {
		f(&c)
	}
}

// UpdateContainerStatus is the one way a container record changes: fn gets
// a copy of the status and returns the new one, which is persisted before
// readers see it. An error from fn or from persisting changes nothing.
func (s *Store) UpdateContainerStatus(id string, fn func(ContainerStatus) (ContainerStatus, error)) (Container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return Container{}, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	st, err := fn(c.Status.clone())
	if err != nil {
		return Container{}, err
	}
	c.Status = st.clone()
	data, err := encodeContainer(c)
	if err == nil {
		err = put(s.db, bucketContainers, id, data)
	}
	if err != nil {
		return Container{}, fmt.Errorf("persist container %q: %w", id, err)
	}
	s.containers[id] = c
	s.containerGen++
	return c.clone(), nil
}

// DeleteContainer forgets the container and frees its name.
func (s *Store) DeleteContainer(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil
	}
	if err := del(s.db, bucketContainers, id); err != nil {
		return fmt.Errorf("delete container %q: %w", id, err)
	}
	delete(s.containers, id)
	s.containerGen++
	if s.names[c.Name] == id {
		delete(s.names, c.Name)
	}
	return nil
}
