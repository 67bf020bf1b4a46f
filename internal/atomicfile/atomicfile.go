// Package atomicfile replaces files so that a crash at any moment leaves
// the name on either the old file or the whole new one, and so that the
// new one is on disk once Write returns.
package atomicfile

import (
	"io"
	"os"
	"path/filepath"
)

// Write makes path a new file of the given mode with what write writes:
// into a temporary file beside it, synced, handed to check (when not nil)
// by its temporary path, then renamed over path, and the directory synced
// so that the rename lasts. On any error path is left as it was and the
// temporary file is removed.
func Write(path string, mode os.FileMode, write func(io.Writer) error, check func(tmp string) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// CreateTemp's mode (0600) would do for private files; Chmod makes
	// the result independent of it.
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := write(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if check != nil {
		if err := check(tmp); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes the entries of dir (a file created, renamed or removed)
// last.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
