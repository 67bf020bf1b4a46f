// Package payload is the application payload that nodes carry inside MLS
// application messages: what a person sent (a line of text) or what a node
// reports back (a delivery receipt), with the id that lets a message arriving
// by two paths be shown once.
//
// It only encodes and decodes; encryption is MLS's job, and deciding what to
// show, store or acknowledge is the node's. The layout, all integers
// big-endian:
//
//	offset size  field
//	0      1     version  = 0x01
//	1      16    id       random per message, chosen by the sender; the
//	                      receiver de-duplicates by it
//	17     1     type     0x01 text, 0x02 receipt; 0x00 is invalid
//	18     8     time     sender's clock, Unix milliseconds, 0 ≤ t < 2^63
//	26     n     body     the rest of the message, n ≤ MaxBodySize
//
// Bodies by type:
//
//	text     UTF-8, 1 ≤ n ≤ MaxBodySize
//	receipt  k message ids (16 bytes each) the sender has received and
//	         stored, 1 ≤ k ≤ MaxReceiptIDs
//
// Unknown types (0x03–0xff) are not an error: Parse returns them with their
// body unchecked (but within MaxBodySize) and Type.Known false, so an older
// node can still de-duplicate and acknowledge what a newer node sends and
// tell its user that it cannot show it. A newer layout gets a new version
// byte, which Parse rejects with ErrVersion.
//
// The encoding is canonical: every byte string has at most one decoding, and
// Marshal(Parse(b)) == b for every b that Parse accepts.
package payload

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
)

// Layout constants; see the package doc.
const (
	// Version is the first byte of every payload.
	Version byte = 0x01
	// IDSize is the length of a message id.
	IDSize = 16
	// HeaderSize is the length of everything before the body.
	HeaderSize = 1 + IDSize + 1 + 8
)

// Limits.
const (
	// MaxBodySize bounds the body of any type. A payload is at most
	// HeaderSize + MaxBodySize bytes.
	MaxBodySize = 64 << 10
	// MaxReceiptIDs bounds the ids in one receipt.
	MaxReceiptIDs = 1024
	// MaxSize is the largest valid payload.
	MaxSize = HeaderSize + MaxBodySize
)

// Errors Parse and Marshal return (wrapped with detail). Callers branch on
// them with errors.Is; none carries message content.
var (
	ErrShort    = errors.New("payload: shorter than the header")
	ErrTooLarge = errors.New("payload: body larger than the limit")
	ErrVersion  = errors.New("payload: unknown version")
	ErrType     = errors.New("payload: invalid type")
	ErrTime     = errors.New("payload: time out of range")
	ErrBody     = errors.New("payload: body invalid for its type")
)

// ID is a message id: 16 random bytes chosen by the sender.
type ID [IDSize]byte

// NewID returns a new random id.
func NewID() ID {
	var id ID
	rand.Read(id[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return id
}

// String returns the id as 32 lowercase hex digits.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is all zeros (never a real message id).
func (id ID) IsZero() bool { return id == ID{} }

// ParseID decodes 32 hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != IDSize {
		return id, fmt.Errorf("payload: message id must be %d hex digits", 2*IDSize)
	}
	copy(id[:], b)
	return id, nil
}

// Type says what the body is.
type Type uint8

// The types this version knows. Values may be added, never reused.
const (
	TypeText    Type = 0x01 // a line of text from a person
	TypeReceipt Type = 0x02 // ids of messages the sender has received
)

// Known reports whether this version understands t.
func (t Type) Known() bool { return t == TypeText || t == TypeReceipt }

func (t Type) String() string {
	switch t {
	case TypeText:
		return "text"
	case TypeReceipt:
		return "receipt"
	default:
		return fmt.Sprintf("type(0x%02x)", uint8(t))
	}
}

// Payload is one decoded application payload.
type Payload struct {
	ID   ID
	Type Type
	// Time is when the sender made it, by the sender's clock, to the
	// millisecond. It is informational: order comes from MLS.
	Time time.Time
	Body []byte
}

// NewText returns a text payload with a new id.
func NewText(text string, now time.Time) Payload {
	return Payload{ID: NewID(), Type: TypeText, Time: now, Body: []byte(text)}
}

// NewReceipt returns a receipt for the given message ids, with a new id.
func NewReceipt(ids []ID, now time.Time) Payload {
	body := make([]byte, 0, len(ids)*IDSize)
	for _, id := range ids {
		body = append(body, id[:]...)
	}
	return Payload{ID: NewID(), Type: TypeReceipt, Time: now, Body: body}
}

// Text returns the body of a text payload, and "" for other types.
func (p Payload) Text() string {
	if p.Type != TypeText {
		return ""
	}
	return string(p.Body)
}

// ReceiptIDs returns the ids a receipt acknowledges, and nil for other types
// or a malformed body.
func (p Payload) ReceiptIDs() []ID {
	if p.Type != TypeReceipt || checkBody(p.Type, p.Body) != nil {
		return nil
	}
	ids := make([]ID, len(p.Body)/IDSize)
	for i := range ids {
		copy(ids[i][:], p.Body[i*IDSize:])
	}
	return ids
}

// Marshal encodes p. It refuses what Parse would refuse, so every payload it
// produces decodes to p (with Time truncated to the millisecond).
func (p Payload) Marshal() ([]byte, error) {
	if p.Type == 0 {
		return nil, fmt.Errorf("%w: 0x00", ErrType)
	}
	ms := p.Time.UnixMilli()
	if ms < 0 {
		return nil, fmt.Errorf("%w: before 1970", ErrTime)
	}
	if err := checkBody(p.Type, p.Body); err != nil {
		return nil, err
	}
	b := make([]byte, HeaderSize, HeaderSize+len(p.Body))
	b[0] = Version
	copy(b[1:], p.ID[:])
	b[1+IDSize] = byte(p.Type)
	binary.BigEndian.PutUint64(b[2+IDSize:], uint64(ms))
	return append(b, p.Body...), nil
}

// Parse decodes b strictly: the version, the type (not 0), the time, the
// body's size and, for known types, the body's form. The body is copied.
func Parse(b []byte) (Payload, error) {
	if len(b) > 0 && b[0] != Version {
		return Payload{}, fmt.Errorf("%w: 0x%02x, want 0x%02x", ErrVersion, b[0], Version)
	}
	if len(b) < HeaderSize {
		return Payload{}, fmt.Errorf("%w: %d bytes, want at least %d", ErrShort, len(b), HeaderSize)
	}
	var p Payload
	copy(p.ID[:], b[1:])
	p.Type = Type(b[1+IDSize])
	if p.Type == 0 {
		return Payload{}, fmt.Errorf("%w: 0x00", ErrType)
	}
	ms := binary.BigEndian.Uint64(b[2+IDSize:])
	if ms > math.MaxInt64 {
		return Payload{}, fmt.Errorf("%w: %d ms", ErrTime, ms)
	}
	p.Time = time.UnixMilli(int64(ms))
	body := b[HeaderSize:]
	if err := checkBody(p.Type, body); err != nil {
		return Payload{}, err
	}
	p.Body = append([]byte{}, body...)
	return p, nil
}

// checkBody checks the size of any body and the form of known ones.
func checkBody(t Type, body []byte) error {
	if len(body) > MaxBodySize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(body), MaxBodySize)
	}
	switch t {
	case TypeText:
		if len(body) == 0 {
			return fmt.Errorf("%w: empty text", ErrBody)
		}
		if !utf8.Valid(body) {
			return fmt.Errorf("%w: text is not UTF-8", ErrBody)
		}
	case TypeReceipt:
		n := len(body) / IDSize
		if len(body)%IDSize != 0 || n == 0 || n > MaxReceiptIDs {
			return fmt.Errorf("%w: receipt of %d bytes, want 1 to %d ids of %d bytes",
				ErrBody, len(body), MaxReceiptIDs, IDSize)
		}
	}
	return nil
}
