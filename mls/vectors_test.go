package mls

import (
	"bytes"
	"testing"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/internal/testvec"
)

type hx = testvec.Hex

// suiteOrSkip returns the suite a vector case names, or skips the case
// saying why.
func suiteOrSkip(t *testing.T, id uint16) cipher.Suite {
	t.Helper()
	s, err := cipher.Lookup(cipher.ID(id))
	if err != nil {
		t.Skipf("cipher suite 0x%04x is not implemented: %v", id, err)
	}
	return s
}

// eq fails the test naming field when got and want differ.
func eq(t *testing.T, field string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s = %x, want %x", field, got, want)
	}
}
