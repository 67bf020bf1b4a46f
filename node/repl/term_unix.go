//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package repl

import (
	"golang.org/x/sys/unix"
)

// IsTerminal reports whether fd is a terminal.
func IsTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	return err == nil
}

// termState is a terminal's saved mode.
type termState struct{ t unix.Termios }

// makeRaw puts fd in the mode the line editor needs — no echo, no line
// buffering, no signals from keys (the editor handles ^C and ^D) — and
// returns the mode to restore. Output processing stays on, so "\n" still
// starts a new line.
func makeRaw(fd int) (*termState, error) {
	t, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		return nil, err
	}
	old := *t
	t.Iflag &^= unix.BRKINT | unix.ICRNL | unix.INPCK | unix.ISTRIP | unix.IXON
	t.Lflag &^= unix.ECHO | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, ioctlSetTermios, t); err != nil {
		return nil, err
	}
	return &termState{old}, nil
}

func restore(fd int, s *termState) error {
	return unix.IoctlSetTermios(fd, ioctlSetTermios, &s.t)
}

// noEcho turns echo off (for a password) and returns the mode to restore.
func noEcho(fd int) (*termState, error) {
	t, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		return nil, err
	}
	old := *t
	t.Lflag &^= unix.ECHO
	t.Lflag |= unix.ICANON | unix.ISIG
	t.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, ioctlSetTermios, t); err != nil {
		return nil, err
	}
	return &termState{old}, nil
}
