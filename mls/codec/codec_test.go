package codec

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// TestVectorDeserialization runs deserialization.json: every varint header
// decodes to its length, and encoding the length gives the header back.
func TestVectorDeserialization(t *testing.T) {
	var cases []struct {
		Header testvec.Hex `json:"vlbytes_header"`
		Length int         `json:"length"`
	}
	testvec.Load(t, "deserialization.json", &cases)
	tally := testvec.NewTally(t, "deserialization.json")
	for i, c := range cases {
		tally.Case(t, 0, fmt.Sprint(i), func(t *testing.T) {
			n, size, err := ReadVarint(c.Header)
			if err != nil {
				t.Fatalf("ReadVarint(%x): %v", c.Header, err)
			}
			if n != c.Length || size != len(c.Header) {
				t.Fatalf("ReadVarint(%x) = %d (%d bytes), want %d (%d bytes)", c.Header, n, size, c.Length, len(c.Header))
			}
			if got := AppendVarint(nil, c.Length); !bytes.Equal(got, c.Header) {
				t.Fatalf("AppendVarint(%d) = %x, want %x", c.Length, got, c.Header)
			}
		})
	}
}

func TestReadVarintStrict(t *testing.T) {
	for _, c := range []struct {
		in   string
		want error
	}{
		{"", ErrTruncated},
		{"40", ErrTruncated},
		{"800000", ErrTruncated},
		{"c0", ErrVarint},          // 11 prefix
		{"ffffffff", ErrVarint},    // 11 prefix
		{"4000", ErrVarint},        // 0 in two bytes
		{"403f", ErrVarint},        // 63 in two bytes
		{"80000000", ErrVarint},    // 0 in four bytes
		{"80003fff", ErrVarint},    // 16383 in four bytes
		{"00", nil}, {"4040", nil}, // minimal forms
	} {
		in, _ := hex.DecodeString(c.in)
		if _, _, err := ReadVarint(in); !errors.Is(err, c.want) {
			t.Errorf("ReadVarint(%s) error = %v, want %v", c.in, err, c.want)
		}
	}
}

type pair struct {
	a uint16
	b []byte
	c *uint64
}

func (p *pair) MarshalTLS(b *Builder) {
	b.AddUint16(p.a)
	b.AddOpaque(p.b)
	b.AddOptional(p.c != nil, func(b *Builder) { b.AddUint64(*p.c) })
}

func (p *pair) UnmarshalTLS(r *Reader) {
	p.a = r.Uint16()
	p.b = r.Opaque(100)
	if r.Optional() {
		v := r.Uint64()
		p.c = &v
	}
}

func TestRoundTripAndStrictness(t *testing.T) {
	seven := uint64(7)
	long := bytes.Repeat([]byte{0xaa}, 100)
	for _, p := range []pair{{1, nil, nil}, {2, []byte{1, 2, 3}, &seven}, {3, long, nil}} {
		enc := Marshal(&p)
		var got pair
		if err := Unmarshal(enc, &got); err != nil {
			t.Fatalf("Unmarshal(%x): %v", enc, err)
		}
		if re := Marshal(&got); !bytes.Equal(re, enc) {
			t.Fatalf("re-encoding %x gave %x", enc, re)
		}
	}
	for _, c := range []struct {
		in   string
		want error
	}{
		{"0001" + "00" + "00" + "ff", ErrTrailing},
		{"0001" + "00" + "02", ErrInvalid},    // presence byte 2
		{"0001" + "4000" + "00", ErrVarint},   // non-minimal length
		{"0001" + "4065" + "00", ErrTooLarge}, // 101 > limit 100
		{"0001" + "05" + "0102", ErrTruncated},
		{"0001" + "00" + "01" + "00", ErrTruncated},
	} {
		in, _ := hex.DecodeString(c.in)
		var p pair
		if err := Unmarshal(in, &p); !errors.Is(err, c.want) {
			t.Errorf("Unmarshal(%s) error = %v, want %v", c.in, err, c.want)
		}
	}
}

func TestVectorLengths(t *testing.T) {
	for _, n := range []int{0, 63, 64, 16383, 16384, 70000} {
		var b Builder
		b.AddUint8(0xee)
		b.AddVector(func(b *Builder) { b.AddBytes(make([]byte, n)) })
		r := NewReader(b.Bytes())
		r.Uint8()
		var got int
		r.Vector(MaxVarint, func(r *Reader) { got = len(r.Bytes(r.Remaining())) })
		if err := r.Finish(); err != nil || got != n {
			t.Fatalf("vector of %d: got %d, %v", n, got, err)
		}
	}
}

func TestReadList(t *testing.T) {
	var b Builder
	AddList(&b, []uint16{1, 2, 3}, func(b *Builder, v uint16) { b.AddUint16(v) })
	r := NewReader(b.Bytes())
	got := ReadList(r, 100, 3, func(r *Reader) uint16 { return r.Uint16() })
	if err := r.Finish(); err != nil || len(got) != 3 || got[2] != 3 {
		t.Fatalf("ReadList = %v, %v", got, err)
	}
	r = NewReader(b.Bytes())
	if ReadList(r, 100, 2, func(r *Reader) uint16 { return r.Uint16() }); !errors.Is(r.Err(), ErrTooLarge) {
		t.Fatalf("count limit: err = %v", r.Err())
	}
	// An item that overruns its vector is an error, not a read past the end.
	r = NewReader([]byte{0x03, 0, 1, 0, 9})
	if ReadList(r, 100, 10, func(r *Reader) uint16 { return r.Uint16() }); !errors.Is(r.Err(), ErrTruncated) {
		t.Fatalf("overrun: err = %v", r.Err())
	}
}

// TestOpaqueNoCopy: the view reads what Opaque reads, aliases the input
// and cannot grow into the bytes after it.
func TestOpaqueNoCopy(t *testing.T) {
	in := []byte{3, 'a', 'b', 'c', 9, 9}
	r := NewReader(in)
	v := r.OpaqueNoCopy(10)
	if string(v) != "abc" || r.Remaining() != 2 || &v[0] != &in[1] {
		t.Fatalf("view %q, %d left", v, r.Remaining())
	}
	v = append(v, 'x')
	if in[4] != 9 {
		t.Fatal("appending to the view overwrote the input")
	}
	if NewReader([]byte{5, 1}).OpaqueNoCopy(10) != nil {
		t.Fatal("truncated opaque read")
	}
	if NewReader([]byte{3, 1, 2, 3}).OpaqueNoCopy(2) != nil {
		t.Fatal("opaque over the limit read")
	}
}
