//go:build !linux

package smallfs

import "errors"

func mount(string, int) error { return errors.New("tmpfs mounts are made on Linux only") }

func unmount(string) {}
