//go:build unix

package identity

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// LockFile serializes LoadOrCreate between processes sharing a data
// directory, so two first starts cannot make two identities.
const LockFile = "identity.lock"

// lockDir takes an exclusive advisory lock on dir/LockFile, waiting for
// another holder, and returns the function that releases it.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return nil, fmt.Errorf("identity: lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("identity: lock data directory: %w", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// checkPrivate refuses a key file with any group or other permission bit.
func checkPrivate(path string, fi os.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o, so other users may read this private key; "+
			"refusing to use it. If no one else can have read it, run: chmod 600 %s; "+
			"otherwise move the data directory aside to start over with a new identity",
			ErrPermissions, path, perm, path)
	}
	return nil
}
