package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/imagesvc"
)

func criImage(img imagesvc.Image) *runtime.Image {
	out := &runtime.Image{
		Id:          img.ID,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        img.Size,
		// No runtime_handler: one store serves every handler (their images
		// would be the same bytes), and containers name none either, so
		// kubelet's image GC, keyed by image and handler under
		// RuntimeClassInImageCriApi, matches images to the containers
		// using them. containerd reports none as well.
		Spec:   &runtime.ImageSpec{Image: img.ID},
		Pinned: img.Pinned,
	}
	// The CRI reports a numeric user as uid and a named one as username,
	// ignoring any group part, as kubelet's runAsNonRoot check expects.
	user := img.Config.Config.User
	if i := strings.IndexByte(user, ':'); i >= 0 {
		user = user[:i]
	}
	if user == "" {
		out.Uid = &runtime.Int64Value{Value: 0}
	} else if uid, err := strconv.ParseInt(user, 10, 64); err == nil {
		out.Uid = &runtime.Int64Value{Value: uid}
	} else {
		out.Username = user
	}
	return out
}

// ListImages lists images, optionally those matching filter.image.
func (s *Server) ListImages(ctx context.Context, r *runtime.ListImagesRequest) (*runtime.ListImagesResponse, error) {
	if ref := r.GetFilter().GetImage().GetImage(); ref != "" {
		img, err := s.images.Get(ctx, ref)
		if errdefs.IsNotFound(err) {
			return &runtime.ListImagesResponse{}, nil
		}
		if err != nil {
			return nil, err
		}
		return &runtime.ListImagesResponse{Images: []*runtime.Image{criImage(img)}}, nil
	}
	imgs, err := s.images.List(ctx)
	if err != nil {
		return nil, err
	}
	resp := &runtime.ListImagesResponse{}
	for _, img := range imgs {
		resp.Images = append(resp.Images, criImage(img))
	}
	return resp, nil
}

// StreamImages sends the same items as ListImages in chunks.
func (s *Server) StreamImages(r *runtime.StreamImagesRequest, stream runtime.ImageService_StreamImagesServer) error {
	resp, err := s.ListImages(stream.Context(), &runtime.ListImagesRequest{Filter: r.GetFilter()})
	if err != nil {
		return err
	}
	items := resp.GetImages()
	return sendChunked(items, func(chunk []*runtime.Image) error {
		return stream.Send(&runtime.StreamImagesResponse{Images: chunk})
	})
}

// ImageStatus reports an image; per the CRI a missing image is a response
// with no image, not an error.
func (s *Server) ImageStatus(ctx context.Context, r *runtime.ImageStatusRequest) (*runtime.ImageStatusResponse, error) {
	if _, err := s.checkImageSpec(r.GetImage()); err != nil {
		return nil, err
	}
	img, err := s.images.Get(ctx, r.GetImage().GetImage())
	if errdefs.IsNotFound(err) {
		return &runtime.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &runtime.ImageStatusResponse{Image: criImage(img)}
	if r.GetVerbose() {
		// the same shape as containerd's verbose info: one JSON document.
		info, err := json.Marshal(map[string]any{
			"imageSpec": img.Config, "chainIDs": img.ChainIDs, "id": img.ID, "size": img.Size,
			"repoTags": img.RepoTags, "repoDigests": img.RepoDigests, "pinned": img.Pinned,
		})
		if err != nil {
			return nil, fmt.Errorf("encode image info: %w", err)
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

// checkImageSpec refuses a spec without an image or naming a runtime
// handler berth does not have, and returns the handler it names.
func (s *Server) checkImageSpec(spec *runtime.ImageSpec) (string, error) {
	if spec.GetImage() == "" {
		return "", fmt.Errorf("image.image is required: %w", errdefs.ErrInvalidArgument)
	}
	return s.runtimeHandler(spec.GetRuntimeHandler())
}

// PullImage pulls an image for the runtime handler the request names
// (kubelet's pod's RuntimeClass) and returns its ID as the image ref. Every
// handler runs images from the one store, so the handler is only checked;
// the pod the pull is for is logged with it.
func (s *Server) PullImage(ctx context.Context, r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
	ref := r.GetImage().GetImage()
	handler, err := s.checkImageSpec(r.GetImage())
	if err != nil {
		return nil, err
	}
	log := interceptor.Logger(ctx).With("runtime_handler", handler)
	if m := r.GetSandboxConfig().GetMetadata(); m != nil {
		log = log.With("pod", m.GetNamespace()+"/"+m.GetName())
	}
	var auth *imagesvc.Auth
	if a := r.GetAuth(); a != nil {
		auth = &imagesvc.Auth{
			Username: a.GetUsername(), Password: a.GetPassword(), Auth: a.GetAuth(),
			IdentityToken: a.GetIdentityToken(), RegistryToken: a.GetRegistryToken(),
			ServerAddress: a.GetServerAddress(),
		}
	}
	start := time.Now()
	img, err := s.images.Pull(ctx, ref, auth)
	if err != nil {
		return nil, fmt.Errorf("pull image %q: %w", ref, err)
	}
	log.Info("image pulled", "image", ref, "id", img.ID, "duration", time.Since(start))
	return &runtime.PullImageResponse{ImageRef: img.ID}, nil
}

// RemoveImage removes an image; per the CRI it succeeds when the image is
// already gone.
func (s *Server) RemoveImage(ctx context.Context, r *runtime.RemoveImageRequest) (*runtime.RemoveImageResponse, error) {
	ref := r.GetImage().GetImage()
	if _, err := s.checkImageSpec(r.GetImage()); err != nil {
		return nil, err
	}
	if err := s.images.Remove(ctx, ref); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	return &runtime.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the space the image store uses.
func (s *Server) ImageFsInfo(ctx context.Context, r *runtime.ImageFsInfoRequest) (*runtime.ImageFsInfoResponse, error) {
	u, err := s.images.FsInfo(ctx)
	if err != nil {
		return nil, err
	}
	resp := &runtime.ImageFsInfoResponse{ImageFilesystems: []*runtime.FilesystemUsage{fsUsage(u)}}
	// kubelet's split-disk image GC reads the writable layers' usage here.
	if c, ok := s.images.(interface {
		ContainersFsInfo(context.Context) (imagesvc.FsUsage, error)
	}); ok {
		cu, err := c.ContainersFsInfo(ctx)
		if err != nil {
			return nil, err
		}
		resp.ContainerFilesystems = []*runtime.FilesystemUsage{fsUsage(cu)}
	}
	return resp, nil
}

func fsUsage(u imagesvc.FsUsage) *runtime.FilesystemUsage {
	return &runtime.FilesystemUsage{
		Timestamp:  time.Now().UnixNano(),
		FsId:       &runtime.FilesystemIdentifier{Mountpoint: u.Mountpoint},
		UsedBytes:  &runtime.UInt64Value{Value: u.UsedBytes},
		InodesUsed: &runtime.UInt64Value{Value: u.InodesUsed},
	}
}
