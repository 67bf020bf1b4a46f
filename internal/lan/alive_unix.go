//go:build unix

package lan

import (
	"errors"
	"syscall"
)

// processAlive reports whether pid exists. A reused pid makes a dead
// owner look alive, which only delays cleanup; it never removes a live
// LAN.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
