//go:build !unix

package identity

import "io/fs"

// LockFile is not used where advisory locks are not available.
const LockFile = "identity.lock"

// lockDir does nothing here: without advisory locks, two first starts on
// one data directory at the same instant are not serialized.
func lockDir(string) (unlock func(), err error) { return func() {}, nil }

// checkPrivate accepts any file: permission bits do not describe access
// here (Windows reports 0666 or 0444), and the data directory's ACL is what
// protects keys.
func checkPrivate(string, fs.FileInfo) error { return nil }
