package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// recordV1 is the version byte that starts every structured record. A
// record with another version is refused (a newer server wrote it).
const recordV1 = 1

// ErrCorrupt reports a stored record that does not decode. It means a bug
// or a damaged file, never bad client input.
var ErrCorrupt = errors.New("store: corrupt record")

func corrupt(what string, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, what, fmt.Sprintf(format, args...))
}

// queueState is the counter record of one queue.
//
//	v1 | next u64 | depth u64   (17 bytes)
//
// next is the last sequence number handed out (0 = none yet); depth the
// number of items currently queued.
type queueState struct {
	next  uint64
	depth uint64
}

const queueStateLen = 1 + 8 + 8

func (q queueState) encode() []byte {
	b := make([]byte, queueStateLen)
	b[0] = recordV1
	binary.BigEndian.PutUint64(b[1:], q.next)
	binary.BigEndian.PutUint64(b[9:], q.depth)
	return b
}

func decodeQueueState(b []byte) (queueState, error) {
	if len(b) != queueStateLen {
		return queueState{}, corrupt("queue state", "length %d", len(b))
	}
	if b[0] != recordV1 {
		return queueState{}, corrupt("queue state", "version %d", b[0])
	}
	q := queueState{next: binary.BigEndian.Uint64(b[1:]), depth: binary.BigEndian.Uint64(b[9:])}
	if q.depth > q.next {
		return queueState{}, corrupt("queue state", "depth %d above last seq %d", q.depth, q.next)
	}
	return q, nil
}

// Channel is a 1:1 channel between two identities, Lo < Hi bytewise.
//
//	v1 | lo [32] | hi [32] | created unix-nanos i64   (73 bytes)
type Channel struct {
	Lo, Hi  Key
	Created time.Time
}

const channelLen = 1 + KeySize + KeySize + 8

func (c Channel) encode() []byte {
	b := make([]byte, 0, channelLen)
	b = append(b, recordV1)
	b = append(b, c.Lo[:]...)
	b = append(b, c.Hi[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(c.Created.UnixNano()))
}

func decodeChannel(b []byte) (Channel, error) {
	if len(b) != channelLen {
		return Channel{}, corrupt("channel", "length %d", len(b))
	}
	if b[0] != recordV1 {
		return Channel{}, corrupt("channel", "version %d", b[0])
	}
	var c Channel
	copy(c.Lo[:], b[1:])
	copy(c.Hi[:], b[1+KeySize:])
	c.Created = time.Unix(0, int64(binary.BigEndian.Uint64(b[1+2*KeySize:])))
	return c, nil
}

// Has reports whether k is one of the channel's two members.
func (c Channel) Has(k Key) bool { return k == c.Lo || k == c.Hi }

// User is a registered account: its identity key and its OPAQUE
// registration record.
//
//	v1 | identity [32] | created unix-nanos i64 | record len u16 | record
type User struct {
	Identity Key
	Created  time.Time
	Record   []byte // OPAQUE RegistrationRecord, serialized
}

// MaxRecordSize bounds a stored OPAQUE registration record.
const MaxRecordSize = 1024

const userFixedLen = 1 + KeySize + 8 + 2

func (u User) encode() []byte {
	b := make([]byte, 0, userFixedLen+len(u.Record))
	b = append(b, recordV1)
	b = append(b, u.Identity[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(u.Created.UnixNano()))
	b = binary.BigEndian.AppendUint16(b, uint16(len(u.Record)))
	return append(b, u.Record...)
}

func decodeUser(b []byte) (User, error) {
	if len(b) < userFixedLen {
		return User{}, corrupt("user", "length %d", len(b))
	}
	if b[0] != recordV1 {
		return User{}, corrupt("user", "version %d", b[0])
	}
	var u User
	copy(u.Identity[:], b[1:])
	u.Created = time.Unix(0, int64(binary.BigEndian.Uint64(b[1+KeySize:])))
	n := int(binary.BigEndian.Uint16(b[1+KeySize+8:]))
	rest := b[userFixedLen:]
	if n != len(rest) || n > MaxRecordSize {
		return User{}, corrupt("user", "record length %d of %d", n, len(rest))
	}
	u.Record = append([]byte(nil), rest...)
	return u, nil
}

// Token is a stored session token: the token itself is never stored, only
// SHA-256(token) split into a lookup selector (the bucket key) and a
// verifier compared in constant time.
//
//	v1 | verifier [16] | identity [32] | expiry unix-nanos i64   (57 bytes)
type Token struct {
	Verifier [VerifierSize]byte
	Identity Key
	Expiry   time.Time
}

// Sizes of the two halves of a token hash.
const (
	SelectorSize = 16
	VerifierSize = 16
)

const tokenLen = 1 + VerifierSize + KeySize + 8

func (t Token) encode() []byte {
	b := make([]byte, 0, tokenLen)
	b = append(b, recordV1)
	b = append(b, t.Verifier[:]...)
	b = append(b, t.Identity[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(t.Expiry.UnixNano()))
}

func decodeToken(b []byte) (Token, error) {
	if len(b) != tokenLen {
		return Token{}, corrupt("token", "length %d", len(b))
	}
	if b[0] != recordV1 {
		return Token{}, corrupt("token", "version %d", b[0])
	}
	var t Token
	copy(t.Verifier[:], b[1:])
	copy(t.Identity[:], b[1+VerifierSize:])
	t.Expiry = time.Unix(0, int64(binary.BigEndian.Uint64(b[1+VerifierSize+KeySize:])))
	return t, nil
}

// Endpoint is a published P2P address record.
//
//	v1 | published unix-nanos i64 | nodeAddr (rest)
type Endpoint struct {
	Published time.Time
	NodeAddr  []byte
}

// MaxEndpointSize bounds a stored nodeAddr.
const MaxEndpointSize = 64 << 10

const endpointFixedLen = 1 + 8

func (e Endpoint) encode() []byte {
	b := make([]byte, 0, endpointFixedLen+len(e.NodeAddr))
	b = append(b, recordV1)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Published.UnixNano()))
	return append(b, e.NodeAddr...)
}

func decodeEndpoint(b []byte) (Endpoint, error) {
	if len(b) < endpointFixedLen || len(b) > endpointFixedLen+MaxEndpointSize {
		return Endpoint{}, corrupt("endpoint", "length %d", len(b))
	}
	if b[0] != recordV1 {
		return Endpoint{}, corrupt("endpoint", "version %d", b[0])
	}
	return Endpoint{
		Published: time.Unix(0, int64(binary.BigEndian.Uint64(b[1:]))),
		NodeAddr:  append([]byte(nil), b[endpointFixedLen:]...),
	}, nil
}
