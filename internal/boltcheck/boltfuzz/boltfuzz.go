// Package boltfuzz is for fuzz targets that damage a bbolt file: the one
// encoding of a fuzzer's edits to a file's bytes. The targets then keep
// the damage boltcheck lets through, which the file's owner must handle
// without a panic.
package boltfuzz

import (
	"bytes"
	"encoding/binary"
)

// EditSize is the size of one edit: a little-endian u32 offset into the
// file (taken modulo its length), then the byte to put there.
const EditSize = 5

// Apply returns a copy of base with edits applied; a trailing partial edit
// is ignored.
func Apply(base, edits []byte) []byte {
	b := bytes.Clone(base)
	for ; len(b) > 0 && len(edits) >= EditSize; edits = edits[EditSize:] {
		b[binary.LittleEndian.Uint32(edits)%uint32(len(b))] = edits[4]
	}
	return b
}
