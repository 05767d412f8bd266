// Package store owns berthd's record of pod sandboxes and containers: what
// kubelet created, persisted in bbolt so that a daemon killed at any point
// and restarted still knows every object. Metadata is immutable once added;
// status changes go through Update, which persists before it publishes.
// Reads hand out copies, and records hold no pointers to shared state.
package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketSandboxes  = []byte("sandboxes")
	bucketContainers = []byte("containers")
)

// recordVersion is written into every record so a later berthd can migrate.
const recordVersion = 1

// Store is the sandbox and container table.
type Store struct {
	db *bolt.DB

	mu         sync.RWMutex // guards every field below
	sandboxes  map[string]Sandbox
	containers map[string]Container
	// names maps a reserved name (sandbox or container) to the ID that
	// holds it, so a retried create finds the object that won.
	names map[string]string
}

// Open loads every record from db.
func Open(db *bolt.DB) (*Store, error) {
	s := &Store{
		db:         db,
		sandboxes:  map[string]Sandbox{},
		containers: map[string]Container{},
		names:      map[string]string{},
	}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSandboxes, bucketContainers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketSandboxes).ForEach(func(k, v []byte) error {
			var sb Sandbox
			if err := json.Unmarshal(v, &sb); err != nil {
				return fmt.Errorf("decode sandbox %q: %w", k, err)
			}
			s.sandboxes[sb.ID] = sb
			s.names[sb.Name] = sb.ID
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
			var c Container
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("decode container %q: %w", k, err)
			}
			s.containers[c.ID] = c
			s.names[c.Name] = c.ID
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load metadata: %w", err)
	}
	return s, nil
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

func put(db *bolt.DB, bucket []byte, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
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

// AddSandbox persists a new sandbox record.
func (s *Store) AddSandbox(sb Sandbox) error {
	sb.Version = recordVersion
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sandboxes[sb.ID]; ok {
		return fmt.Errorf("sandbox %q: %w", sb.ID, errdefs.ErrAlreadyExists)
	}
	if err := put(s.db, bucketSandboxes, sb.ID, sb); err != nil {
		return fmt.Errorf("persist sandbox %q: %w", sb.ID, err)
	}
	s.sandboxes[sb.ID] = sb
	s.names[sb.Name] = sb.ID
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

// UpdateSandbox applies fn to a copy of the record and persists the result.
func (s *Store) UpdateSandbox(id string, fn func(*Sandbox) error) (Sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok {
		return Sandbox{}, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	sb = sb.clone()
	if err := fn(&sb); err != nil {
		return Sandbox{}, err
	}
	if err := put(s.db, bucketSandboxes, id, sb); err != nil {
		return Sandbox{}, fmt.Errorf("persist sandbox %q: %w", id, err)
	}
	s.sandboxes[id] = sb
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
	if s.names[sb.Name] == id {
		delete(s.names, sb.Name)
	}
	return nil
}

// AddContainer persists a new container record.
func (s *Store) AddContainer(c Container) error {
	c.Version = recordVersion
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[c.ID]; ok {
		return fmt.Errorf("container %q: %w", c.ID, errdefs.ErrAlreadyExists)
	}
	if err := put(s.db, bucketContainers, c.ID, c); err != nil {
		return fmt.Errorf("persist container %q: %w", c.ID, err)
	}
	s.containers[c.ID] = c
	s.names[c.Name] = c.ID
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
func (s *Store) ContainersOf(sandboxID string) []Container {
	var out []Container
	for _, c := range s.Containers() {
		if c.SandboxID == sandboxID {
			out = append(out, c)
		}
	}
	return out
}

// UpdateContainer applies fn to a copy of the record and persists the result.
func (s *Store) UpdateContainer(id string, fn func(*Container) error) (Container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return Container{}, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	c = c.clone()
	if err := fn(&c); err != nil {
		return Container{}, err
	}
	if err := put(s.db, bucketContainers, id, c); err != nil {
		return Container{}, fmt.Errorf("persist container %q: %w", id, err)
	}
	s.containers[id] = c
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
	if s.names[c.Name] == id {
		delete(s.names, c.Name)
	}
	return nil
}
