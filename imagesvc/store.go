package imagesvc

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Buckets (all top level, prefixed "images" to share berthd's db):
// records: image ID -> imageRecord; names: tag or digest ref -> image ID;
// rootfs: container ID -> rootfsRecord (the layers a container's mount uses).
var (
	bucketImages = []byte("images.v1.records")
	bucketNames  = []byte("images.v1.names")
	bucketRootfs = []byte("images.v1.rootfs")
)

const recordVersion = 1

type imageRecord struct {
	Version int `json:"v"`
	Image
}

type rootfsRecord struct {
	Version  int             `json:"v"`
	ImageID  string          `json:"imageID"`
	ChainIDs []digest.Digest `json:"chainIDs"`
}

// initBuckets creates the image buckets unless they all exist: at a
// restart they do, and a write transaction would cost a bbolt commit (two
// fdatasyncs) before berthd serves.
func initBuckets(db *bolt.DB) error {
	buckets := [][]byte{bucketImages, bucketNames, bucketRootfs}
	present := true
	if err := db.View(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			present = present && tx.Bucket(b) != nil
		}
		return nil
	}); err != nil || present {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %q: %w", b, err)
			}
		}
		return nil
	})
}

func getImage(tx *bolt.Tx, id string) (Image, error) {
	v := tx.Bucket(bucketImages).Get([]byte(id))
	if v == nil {
		return Image{}, fmt.Errorf("image %q: %w", id, errdefs.ErrNotFound)
	}
	var rec imageRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return Image{}, fmt.Errorf("decode image %q: %w", id, err)
	}
	return rec.Image, nil
}

// putImage writes img's record; RepoTags forgets what it kept once the
// write is committed.
func (s *Service) putImage(tx *bolt.Tx, img Image) error {
	tx.OnCommit(s.tags.changed)
	v, err := json.Marshal(imageRecord{Version: recordVersion, Image: img})
	if err != nil {
		return fmt.Errorf("encode image %q: %w", img.ID, err)
	}
	return tx.Bucket(bucketImages).Put([]byte(img.ID), v)
}

func listImages(tx *bolt.Tx) ([]Image, error) {
	var imgs []Image
	err := tx.Bucket(bucketImages).ForEach(func(k, _ []byte) error {
		img, err := getImage(tx, string(k))
		if err != nil {
			return err
		}
		imgs = append(imgs, img)
		return nil
	})
	return imgs, err
}

// storePulled records a pulled image under tag and repoDigest (either may be ""),
// merging with an existing record of the same ID. A tag that pointed at
// another image moves: that image loses it (and keeps its other names).
func (s *Service) storePulled(tx *bolt.Tx, img Image, tag, repoDigest string) (Image, error) {
	names := tx.Bucket(bucketNames)
	if old, err := getImage(tx, img.ID); err == nil {
		img.RepoTags, img.RepoDigests = old.RepoTags, old.RepoDigests
		if img.Annotations == nil {
			img.Annotations = old.Annotations
		}
		// one config reached through another manifest (an index, a
		// mirror's re-push) owns both sets of blobs.
		img.Blobs = slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(old.Blobs), img.Blobs...))))
	}
	if tag != "" {
		if prev := names.Get([]byte(tag)); prev != nil && string(prev) != img.ID {
			if err := s.dropName(tx, string(prev), tag); err != nil {
				return Image{}, err
			}
		}
		if err := names.Put([]byte(tag), []byte(img.ID)); err != nil {
			return Image{}, err
		}
		img.RepoTags = addName(img.RepoTags, tag)
	}
	if repoDigest == "" { // loaded from an archive with no registry name
		return img, s.putImage(tx, img)
	}
	if prev := names.Get([]byte(repoDigest)); prev != nil && string(prev) != img.ID {
		if err := s.dropName(tx, string(prev), repoDigest); err != nil {
			return Image{}, err
		}
	}
	if err := names.Put([]byte(repoDigest), []byte(img.ID)); err != nil {
		return Image{}, err
	}
	img.RepoDigests = addName(img.RepoDigests, repoDigest)
	return img, s.putImage(tx, img)
}

func addName(list []string, n string) []string {
	if slices.Contains(list, n) {
		return list
	}
	return append(slices.Clone(list), n)
}

// dropName removes name from image id's record.
func (s *Service) dropName(tx *bolt.Tx, id, name string) error {
	img, err := getImage(tx, id)
	if err != nil {
		return err
	}
	del := func(n string) bool { return n == name }
	img.RepoTags = slices.DeleteFunc(img.RepoTags, del)
	img.RepoDigests = slices.DeleteFunc(img.RepoDigests, del)
	return s.putImage(tx, img)
}

// deleteImage removes image id and every name pointing at it.
func (s *Service) deleteImage(tx *bolt.Tx, id string) (Image, error) {
	tx.OnCommit(s.tags.changed)
	img, err := getImage(tx, id)
	if err != nil {
		return Image{}, err
	}
	names := tx.Bucket(bucketNames)
	for _, n := range append(slices.Clone(img.RepoTags), img.RepoDigests...) {
		if string(names.Get([]byte(n))) == id {
			if err := names.Delete([]byte(n)); err != nil {
				return Image{}, err
			}
		}
	}
	return img, tx.Bucket(bucketImages).Delete([]byte(id))
}

func getRootfs(tx *bolt.Tx, containerID string) (rootfsRecord, bool, error) {
	v := tx.Bucket(bucketRootfs).Get([]byte(containerID))
	if v == nil {
		return rootfsRecord{}, false, nil
	}
	var rec rootfsRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return rootfsRecord{}, false, fmt.Errorf("decode rootfs record of container %q: %w", containerID, err)
	}
	return rec, true, nil
}

func putRootfs(tx *bolt.Tx, containerID string, rec rootfsRecord) error {
	rec.Version = recordVersion
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketRootfs).Put([]byte(containerID), v)
}

// usedChains is every chain ID referenced by an image or a container rootfs.
func usedChains(tx *bolt.Tx) (map[digest.Digest]bool, error) {
	used := map[digest.Digest]bool{}
	imgs, err := listImages(tx)
	if err != nil {
		return nil, err
	}
	for _, img := range imgs {
		for _, c := range img.ChainIDs {
			used[c] = true
		}
	}
	err = tx.Bucket(bucketRootfs).ForEach(func(k, _ []byte) error {
		rec, _, err := getRootfs(tx, string(k))
		for _, c := range rec.ChainIDs {
			used[c] = true
		}
		return err
	})
	return used, err
}
