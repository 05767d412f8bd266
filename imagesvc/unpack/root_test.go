package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestApplyKeepsRootDir: a layer's "./" entry must not change the layer
// dir's owner or mode (issue 18 item 3): a 0777 root would open the layer
// to every local user, a 0700 one shut non-root container users out.
func TestApplyKeepsRootDir(t *testing.T) {
	requireRoot(t)
	for _, mode := range []int64{0o777, 0o700, 0o4755} {
		dir := filepath.Join(t.TempDir(), "layer")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		data := mkTar(t, []ent{
			{name: "./", typ: tar.TypeDir, mode: mode, uid: 1000, gid: 1000,
				pax: map[string]string{"SCHILY.xattr.user.root": "x"}},
			{name: "f", typ: tar.TypeReg, body: "x"},
		})
		if err := Apply(context.Background(), dir, bytes.NewReader(data), nil); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != 0o755 || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("./ mode %o: layer root is mode %o owner %d:%d, want 755 0:0", mode, st.Mode&0o7777, st.Uid, st.Gid)
		}
		if _, err := unix.Lgetxattr(dir, "user.root", make([]byte, 8)); err == nil {
			t.Errorf("./ xattr applied to the layer root")
		}
	}
}
