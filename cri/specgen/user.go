package specgen

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func resolveProcessUser(in Input) (specs.User, error) {
	return ResolveUser(in.Config.GetLinux().GetSecurityContext(), in.Image.User, in.Users)
}

// ResolveUser computes the container process' user from the CRI security
// context, falling back to the image's User ("uid", "uid:gid", "name",
// "name:group", ...). Names are resolved through users (nil => only
// numeric forms work). AdditionalGids holds the primary gid, the user's
// /etc/group memberships (policy Merge only) and supplemental_groups.
func ResolveUser(sc *runtime.LinuxContainerSecurityContext, imageUser string, users UserLookup) (specs.User, error) {
	if sc.GetRunAsUser() != nil && sc.GetRunAsUsername() != "" {
		return specs.User{}, fmt.Errorf("only one of run_as_user and run_as_username may be set: %w", errdefs.ErrInvalidArgument)
	}
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		// CRI: run_as_group without a user "the runtime MUST error".
		return specs.User{}, fmt.Errorf("run_as_group requires run_as_user or run_as_username: %w", errdefs.ErrInvalidArgument)
	}
	var (
		uid, gid uint32
		name     string
		err      error
	)
	switch {
	case sc.GetRunAsUser() != nil:
		if uid, err = toID("run_as_user", sc.GetRunAsUser().GetValue()); err != nil {
			return specs.User{}, err
		}
		name = strconv.FormatUint(uint64(uid), 10)
		gid, err = primaryGID(users, name)
	case sc.GetRunAsUsername() != "":
		name = sc.GetRunAsUsername()
		uid, gid, err = lookupNamedUser(users, name)
	default:
		uid, gid, name, err = parseImageUser(imageUser, users)
	}
	if err != nil {
		return specs.User{}, err
	}
	if sc.GetRunAsGroup() != nil {
		if gid, err = toID("run_as_group", sc.GetRunAsGroup().GetValue()); err != nil {
			return specs.User{}, err
		}
	}
	gids := []uint32{gid}
	if users != nil && sc.GetSupplementalGroupsPolicy() != runtime.SupplementalGroupsPolicy_Strict {
		gids = append(gids, users.GroupsOf(name, gid)...)
	}
	for _, g := range sc.GetSupplementalGroups() {
		id, err := toID("supplemental_groups", g)
		if err != nil {
			return specs.User{}, err
		}
		gids = append(gids, id)
	}
	return specs.User{UID: uid, GID: gid, AdditionalGids: dedupe(gids)}, nil
}

// parseImageUser parses the image config's User field.
func parseImageUser(s string, users UserLookup) (uid, gid uint32, name string, err error) {
	if s == "" {
		s = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(s, ":")
	name = userPart
	if n, perr := strconv.ParseUint(userPart, 10, 32); perr == nil {
		uid = uint32(n)
		if !hasGroup {
			gid, err = primaryGID(users, userPart)
		}
	} else {
		uid, gid, err = lookupNamedUser(users, userPart)
	}
	if err != nil || !hasGroup {
		return uid, gid, name, err
	}
	if n, perr := strconv.ParseUint(groupPart, 10, 32); perr == nil {
		return uid, uint32(n), name, nil
	}
	gid, err = lookupNamedGroup(users, groupPart)
	return uid, gid, name, err
}

// primaryGID finds a numeric uid's group in the image's passwd; a uid that
// is not listed runs with gid 0, as in Docker and containerd.
func primaryGID(users UserLookup, uid string) (uint32, error) {
	if users == nil {
		return 0, nil
	}
	_, gid, err := users.LookupUser(uid)
	switch {
	case err == nil:
		return gid, nil
	case errdefs.IsNotFound(err):
		return 0, nil
	}
	return 0, fmt.Errorf("look up uid %s: %w", uid, err)
}

func lookupNamedUser(users UserLookup, name string) (uint32, uint32, error) {
	if users == nil {
		return 0, 0, fmt.Errorf("cannot resolve user %q without the image's /etc/passwd: %w", name, errdefs.ErrInvalidArgument)
	}
	uid, gid, err := users.LookupUser(name)
	if errdefs.IsNotFound(err) {
		return 0, 0, fmt.Errorf("user %q not found in image: %w", name, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("look up user %q: %w", name, err)
	}
	return uid, gid, nil
}

func lookupNamedGroup(users UserLookup, name string) (uint32, error) {
	if users == nil {
		return 0, fmt.Errorf("cannot resolve group %q without the image's /etc/group: %w", name, errdefs.ErrInvalidArgument)
	}
	gid, err := users.LookupGroup(name)
	if errdefs.IsNotFound(err) {
		return 0, fmt.Errorf("group %q not found in image: %w", name, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return 0, fmt.Errorf("look up group %q: %w", name, err)
	}
	return gid, nil
}

func toID(field string, v int64) (uint32, error) {
	if v < 0 || v > math.MaxUint32-1 {
		return 0, fmt.Errorf("%s %d out of range: %w", field, v, errdefs.ErrInvalidArgument)
	}
	return uint32(v), nil
}

func dedupe(ids []uint32) []uint32 {
	seen := make(map[uint32]bool, len(ids))
	out := ids[:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
