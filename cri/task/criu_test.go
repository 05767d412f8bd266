package task

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCRIUProof: a probe's success is remembered for the very binary it
// probed, and for no other.
func TestCRIUProof(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "criu")
	if err := os.WriteFile(bin, []byte("one"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "proof.json")
	p, err := proofOf(bin)
	if err != nil {
		t.Fatal(err)
	}
	if p.holds(file) {
		t.Fatal("a proof holds before it was saved")
	}
	p.save(file)
	if again, _ := proofOf(bin); !again.holds(file) {
		t.Error("the saved proof does not hold for the same binary")
	}
	if err := os.WriteFile(bin, []byte("another"), 0o755); err != nil {
		t.Fatal(err)
	}
	if changed, _ := proofOf(bin); changed.holds(file) {
		t.Error("the proof holds for a replaced binary")
	}
}
