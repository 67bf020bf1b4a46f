//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package boltcheck

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// lockWait is how long File waits for a writer to let go of the file,
// as long as bbolt waits when this project opens one.
const lockWait = time.Second

// lockShared takes a shared flock on f, as bbolt's read-only opens do;
// closing f releases it.
func lockShared(f *os.File) error {
	deadline := time.Now().Add(lockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return ErrLocked
		}
		time.Sleep(50 * time.Millisecond)
	}
}
