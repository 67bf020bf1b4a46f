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

// raceSample skips, under the race detector, two of every three cases of
// the suites whose arithmetic is instrumented Go there (P-384, P-521, X448
// and Ed448 run 20–50 times slower), saying so; without -race every case
// runs. The race detector looks for data races, which the vector code,
// one goroutine per case, cannot have beyond what the sample shows.
func raceSample(t *testing.T, suite uint16, i int) {
	t.Helper()
	if raceEnabled && suite >= 4 && i%3 != 0 {
		t.Skip("under -race only every third case of suites 0x0004-0x0007 runs; all run without -race")
	}
}
