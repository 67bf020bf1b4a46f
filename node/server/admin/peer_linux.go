package admin

import (
	"net"
	"os"
	"syscall"
)

// peerAllowed reports whether the process at the other end of c runs as
// this server's user or as root (SO_PEERCRED). The socket's mode already
// keeps other users out; this also covers the moment between binding the
// socket and restricting its mode, and a data directory others can enter.
func peerAllowed(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return cred.Uid == uint32(os.Getuid()) || cred.Uid == 0
}
