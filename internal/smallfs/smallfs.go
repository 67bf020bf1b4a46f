// Package smallfs gives tests a directory on a file system of their own,
// small enough to fill up: a tmpfs mounted for the test and unmounted at
// its end. It needs root (as the network-namespace tests do) and skips
// the test otherwise.
package smallfs

import (
	"os"
	"testing"
)

// Dir returns a new directory on a tmpfs of size bytes.
func Dir(t testing.TB, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := mount(dir, size); err != nil {
		t.Skipf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unmount(dir) })
	return dir
}
