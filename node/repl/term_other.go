//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package repl

import "errors"

// IsTerminal reports false: line editing is supported on Unix only.
func IsTerminal(int) bool { return false }

type termState struct{}

var errNoTerminal = errors.New("repl: terminals are supported on Unix only")

func makeRaw(int) (*termState, error) { return nil, errNoTerminal }
func restore(int, *termState) error   { return nil }
func noEcho(int) (*termState, error)  { return nil, errNoTerminal }
