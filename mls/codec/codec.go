// Package codec encodes and decodes the TLS presentation language as MLS
// uses it (RFC 9420 §2.1): fixed-width big-endian integers, fixed-length
// byte strings, optional<T>, and vectors with a variable-length length
// prefix <V>.
//
// The <V> prefix is the QUIC-style varint of RFC 9000 §16 restricted to 1, 2
// or 4 bytes (prefix bits 00, 01, 10) and to its minimal encoding:
//
//	00xxxxxx                             0 ..        63
//	01xxxxxx xxxxxxxx                   64 ..    16 383
//	10xxxxxx xxxxxxxx xxxxxxxx xxxxxxxx 16 384 .. 2^30 - 1
//
// Decoding is strict. A Reader rejects a truncated input, a varint with the
// 11 prefix or a longer encoding than needed, a vector longer than the limit
// its caller names or than the bytes that remain, an optional presence byte
// other than 0 or 1, and (in Unmarshal) trailing bytes. Nothing is allocated
// from a length before that length has been checked against the remaining
// input, so a decoder never allocates more than its input.
//
// Errors are sticky: after the first failure every read returns a zero value
// and Err reports the first error, so decoders read a whole struct and check
// once.
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MaxVarint is the largest length a <V> prefix can carry.
const MaxVarint = 1<<30 - 1

// Errors reported by a Reader, wrapped with the name of the field that failed.
var (
	ErrTruncated  = errors.New("input truncated")
	ErrVarint     = errors.New("invalid or non-minimal variable-length integer")
	ErrTooLarge   = errors.New("length exceeds limit")
	ErrTrailing   = errors.New("trailing bytes")
	ErrInvalid    = errors.New("invalid value")
	errNegativeSz = errors.New("negative size")
)

// Marshaler is a value with a TLS presentation encoding.
type Marshaler interface {
	MarshalTLS(b *Builder)
}

// Unmarshaler is a value that decodes itself from a Reader. It reports a
// failure through the Reader (Fail), not by panicking.
type Unmarshaler interface {
	UnmarshalTLS(r *Reader)
}

// Marshal returns the encoding of v.
func Marshal(v Marshaler) []byte {
	var b Builder
	v.MarshalTLS(&b)
	return b.Bytes()
}

// Unmarshal decodes data into v, which must consume all of it.
func Unmarshal(data []byte, v Unmarshaler) error {
	r := NewReader(data)
	v.UnmarshalTLS(r)
	return r.Finish()
}

// A Builder appends encoded values to a buffer. The zero value is ready to
// use.
type Builder struct {
	buf []byte
}

// NewBuilder returns a Builder whose buffer starts with capacity n.
func NewBuilder(n int) *Builder { return &Builder{buf: make([]byte, 0, n)} }

// Bytes returns the encoded bytes. The Builder keeps appending to the same
// buffer, so callers that keep building must copy.
func (b *Builder) Bytes() []byte { return b.buf }

// Len returns the number of bytes written so far.
func (b *Builder) Len() int { return len(b.buf) }

// Reset empties the buffer, keeping its capacity.
func (b *Builder) Reset() { b.buf = b.buf[:0] }

// AddUint8 appends v.
func (b *Builder) AddUint8(v uint8) { b.buf = append(b.buf, v) }

// AddUint16 appends v, big-endian.
func (b *Builder) AddUint16(v uint16) { b.buf = binary.BigEndian.AppendUint16(b.buf, v) }

// AddUint32 appends v, big-endian.
func (b *Builder) AddUint32(v uint32) { b.buf = binary.BigEndian.AppendUint32(b.buf, v) }

// AddUint64 appends v, big-endian.
func (b *Builder) AddUint64(v uint64) { b.buf = binary.BigEndian.AppendUint64(b.buf, v) }

// AddBytes appends v as a fixed-length field (no length prefix).
func (b *Builder) AddBytes(v []byte) { b.buf = append(b.buf, v...) }

// AddOpaque appends v as opaque<V>.
func (b *Builder) AddOpaque(v []byte) {
	b.buf = AppendVarint(b.buf, len(v))
	b.buf = append(b.buf, v...)
}

// AddString appends s as opaque<V>.
func (b *Builder) AddString(s string) {
	b.buf = AppendVarint(b.buf, len(s))
	b.buf = append(b.buf, s...)
}

// AddVector appends whatever f writes as a <V> vector.
func (b *Builder) AddVector(f func(b *Builder)) {
	start := len(b.buf)
	f(b)
	n := len(b.buf) - start
	hdr := varintLen(n)
	// Shift the body right to make room for its minimal length prefix.
	b.buf = append(b.buf, make([]byte, hdr)...)
	copy(b.buf[start+hdr:], b.buf[start:start+n])
	putVarint(b.buf[start:start+hdr], n)
}

// AddOptional appends optional<T>: a presence byte, then f's output when
// present.
func (b *Builder) AddOptional(present bool, f func(b *Builder)) {
	if !present {
		b.AddUint8(0)
		return
	}
	b.AddUint8(1)
	f(b)
}

// AddMarshaler appends v's encoding.
func (b *Builder) AddMarshaler(v Marshaler) { v.MarshalTLS(b) }

// AddList appends items as a <V> vector, each encoded by f.
func AddList[T any](b *Builder, items []T, f func(b *Builder, item T)) {
	b.AddVector(func(b *Builder) {
		for _, it := range items {
			f(b, it)
		}
	})
}

// varintLen returns the size of the minimal varint for n. Lengths beyond
// MaxVarint cannot occur for values this package builds (they would need a
// gigabyte in memory); they panic as the programming error they are.
func varintLen(n int) int {
	switch {
	case n < 0 || n > MaxVarint:
		panic(fmt.Sprintf("codec: vector length %d out of range", n))
	case n < 1<<6:
		return 1
	case n < 1<<14:
		return 2
	default:
		return 4
	}
}

func putVarint(dst []byte, n int) {
	switch len(dst) {
	case 1:
		dst[0] = byte(n)
	case 2:
		binary.BigEndian.PutUint16(dst, uint16(n)|0x4000)
	case 4:
		binary.BigEndian.PutUint32(dst, uint32(n)|0x80000000)
	}
}

// AppendVarint appends the minimal <V> length prefix for n.
func AppendVarint(dst []byte, n int) []byte {
	var tmp [4]byte
	l := varintLen(n)
	putVarint(tmp[:l], n)
	return append(dst, tmp[:l]...)
}

// ReadVarint decodes a <V> length prefix from the start of src and returns
// the value and the number of bytes it occupied.
func ReadVarint(src []byte) (n int, size int, err error) {
	if len(src) == 0 {
		return 0, 0, ErrTruncated
	}
	prefix := src[0] >> 6
	if prefix == 3 {
		return 0, 0, ErrVarint
	}
	size = 1 << prefix
	if len(src) < size {
		return 0, 0, ErrTruncated
	}
	v := uint32(src[0] & 0x3f)
	for i := 1; i < size; i++ {
		v = v<<8 | uint32(src[i])
	}
	if prefix >= 1 && v < 1<<(8*(size/2)-2) {
		return 0, 0, ErrVarint
	}
	return int(v), size, nil
}

// A Reader decodes values from a byte slice.
type Reader struct {
	s   []byte
	err error
}

// NewReader returns a Reader over data. It does not copy data; values it
// returns are copies, so callers may reuse data afterwards.
func NewReader(data []byte) *Reader { return &Reader{s: data} }

// Err returns the first error, if any.
func (r *Reader) Err() error { return r.err }

// Empty reports whether all input has been consumed (or reading failed).
func (r *Reader) Empty() bool { return r.err != nil || len(r.s) == 0 }

// Remaining returns the number of unread bytes.
func (r *Reader) Remaining() int { return len(r.s) }

// Fail records err as the Reader's error unless one is recorded already.
func (r *Reader) Fail(err error) {
	if r.err == nil {
		r.err = err
		r.s = nil
	}
}

// Failf records a formatted error wrapping ErrInvalid.
func (r *Reader) Failf(format string, args ...any) {
	r.Fail(fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...))
}

// Finish returns the first error, or ErrTrailing if input remains.
func (r *Reader) Finish() error {
	if r.err != nil {
		return r.err
	}
	if len(r.s) != 0 {
		return fmt.Errorf("%w: %d bytes", ErrTrailing, len(r.s))
	}
	return nil
}

func (r *Reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.s) {
		r.Fail(ErrTruncated)
		return nil
	}
	v := r.s[:n:n]
	r.s = r.s[n:]
	return v
}

// Uint8 reads one byte.
func (r *Reader) Uint8() uint8 {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

// Uint16 reads a big-endian uint16.
func (r *Reader) Uint16() uint16 {
	if v := r.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

// Uint32 reads a big-endian uint32.
func (r *Reader) Uint32() uint32 {
	if v := r.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

// Uint64 reads a big-endian uint64.
func (r *Reader) Uint64() uint64 {
	if v := r.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// Bytes reads a fixed-length field of n bytes and returns a copy.
func (r *Reader) Bytes(n int) []byte {
	if n < 0 {
		r.Fail(errNegativeSz)
		return nil
	}
	return clone(r.take(n))
}

// length reads a <V> prefix and checks it against max and the remaining input.
func (r *Reader) length(max int) (int, bool) {
	if r.err != nil {
		return 0, false
	}
	n, size, err := ReadVarint(r.s)
	if err != nil {
		r.Fail(err)
		return 0, false
	}
	r.s = r.s[size:]
	if n > max {
		r.Fail(fmt.Errorf("%w: %d > %d", ErrTooLarge, n, max))
		return 0, false
	}
	if n > len(r.s) {
		r.Fail(ErrTruncated)
		return 0, false
	}
	return n, true
}

// Opaque reads opaque<V> of at most max bytes and returns a copy (nil when
// empty).
func (r *Reader) Opaque(max int) []byte {
	n, ok := r.length(max)
	if !ok {
		return nil
	}
	return clone(r.take(n))
}

// OpaqueNoCopy reads an opaque<V> of at most max bytes like Opaque, but
// returns a slice of the input instead of a copy: for a caller that owns
// the input and hands it on.
func (r *Reader) OpaqueNoCopy(max int) []byte {
	n, ok := r.length(max)
	if !ok {
		return nil
	}
	return r.take(n)
}

// Vector reads a <V> vector of at most max bytes and hands its body to f as
// a Reader of its own; f must consume the body entirely.
func (r *Reader) Vector(max int, f func(r *Reader)) {
	n, ok := r.length(max)
	if !ok {
		return
	}
	sub := Reader{s: r.take(n)}
	f(&sub)
	if err := sub.Finish(); err != nil {
		r.Fail(err)
	}
}

// Optional reads the presence byte of optional<T>.
func (r *Reader) Optional() bool {
	switch v := r.Uint8(); {
	case r.err != nil:
		return false
	case v == 0:
		return false
	case v == 1:
		return true
	default:
		r.Failf("optional presence byte %d", v)
		return false
	}
}

// ReadList reads a <V> vector of at most maxBytes bytes whose body is a
// sequence of items, each decoded by f, and at most maxCount of them.
func ReadList[T any](r *Reader, maxBytes, maxCount int, f func(r *Reader) T) []T {
	var out []T
	r.Vector(maxBytes, func(r *Reader) {
		for !r.Empty() {
			if len(out) == maxCount {
				r.Fail(fmt.Errorf("%w: more than %d items", ErrTooLarge, maxCount))
				return
			}
			v := f(r)
			if r.Err() != nil {
				return
			}
			out = append(out, v)
		}
	})
	if r.Err() != nil {
		return nil
	}
	return out
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
