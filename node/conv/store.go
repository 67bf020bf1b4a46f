package conv

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Storage, in the node's bbolt file:
//
//	node.convs     group id → conversation record
//	node.deferred  len(group id) (1) || group id || seq (8) → deferred message
//	node.held      len(group id) (1) || group id || seq (8) → payload
//
// Conversation record, version 1 (integers big-endian):
//
//	offset size  field
//	0      1     version = 0x01
//	1      1     kind (see Kind)
//	2      1     status (see Status)
//	3      32    peer identity key (a DM), zeros for a group
//	35     1     name length n ≤ MaxNameSize
//	36     n     group name
//	36+n   1     k = number of commit hashes, ≤ maxCommitHashes
//	37+n   32k   SHA-256 of the last k Commits applied (their MLSMessage bytes), oldest first
//	…      4     s = length of the MLS group state
//	…      s     mls.Group.MarshalState (empty while waiting for a Welcome)
//
// Deferred message, version 1: 0x01 | received, Unix ms (8) | via length (1) | via | MLSMessage
//
// Held payload: the node/payload bytes of a text written while the group
// had proposals waiting for a Commit (RFC 9420 forbids sending application
// data then); it is encrypted and sent right after the next Commit.
var (
	bucketConvs    = []byte("node.convs")
	bucketDeferred = []byte("node.deferred")
	bucketHeld     = []byte("node.held")
)

const (
	recordVersion   = 0x01
	maxCommitHashes = 32
	// MaxStateSize bounds a stored group state.
	MaxStateSize = 64 << 20
	maxViaSize   = 32
)

// Limits on messages kept for later.
const (
	// MaxDeferredPerGroup and MaxDeferredTotal bound the messages kept
	// because they belong to a later epoch or a group not joined yet; a
	// message beyond either limit is dropped (and logged).
	MaxDeferredPerGroup = 256
	MaxDeferredTotal    = 4096
	// MaxDeferredAge is how long such a message is kept.
	MaxDeferredAge = 24 * time.Hour
	// MaxHeldPerGroup bounds texts waiting for a Commit.
	MaxHeldPerGroup = 1000
)

// ErrCorrupt reports a stored record this version cannot read.
var ErrCorrupt = errors.New("conv: stored record is corrupt")

// Status is where this node stands in a conversation.
type Status uint8

const (
	StatusActive  Status = 0x01 // a member
	StatusWaiting Status = 0x02 // a DM whose Welcome has not arrived yet
	StatusLeft    Status = 0x03 // left by its own request
	StatusRemoved Status = 0x04 // removed by another member
)

func (s Status) String() string {
	switch s {
	case StatusActive:
		return "active"
	case StatusWaiting:
		return "waiting"
	case StatusLeft:
		return "left"
	case StatusRemoved:
		return "removed"
	}
	return fmt.Sprintf("status(0x%02x)", uint8(s))
}

func validStatus(s Status) bool { return s >= StatusActive && s <= StatusRemoved }

// record is a conversation as stored.
type record struct {
	kind    Kind
	status  Status
	peer    ed25519.PublicKey // nil for a group
	name    string
	commits [][sha256.Size]byte
	state   []byte
}

func (r *record) encode() []byte {
	b := make([]byte, 0, 64+len(r.name)+len(r.commits)*sha256.Size+len(r.state))
	b = append(b, recordVersion, byte(r.kind), byte(r.status))
	var peer [ed25519.PublicKeySize]byte
	copy(peer[:], r.peer)
	b = append(b, peer[:]...)
	b = append(b, byte(len(r.name)))
	b = append(b, r.name...)
	b = append(b, byte(len(r.commits)))
	for _, h := range r.commits {
		b = append(b, h[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.state)))
	return append(b, r.state...)
}

func decodeRecord(v []byte) (*record, error) {
	bad := func(what string) (*record, error) { return nil, fmt.Errorf("%w: %s", ErrCorrupt, what) }
	if len(v) < 36 || v[0] != recordVersion {
		return bad("header")
	}
	r := &record{kind: Kind(v[1]), status: Status(v[2])}
	if r.kind != KindDirect && r.kind != KindGroup || !validStatus(r.status) {
		return bad("kind or status")
	}
	if peer := v[3:35]; r.kind == KindDirect {
		r.peer = bytes.Clone(peer)
	}
	n := int(v[35])
	rest := v[36:]
	if n > MaxNameSize || len(rest) < n+1 {
		return bad("name")
	}
	r.name = string(rest[:n])
	rest = rest[n:]
	k := int(rest[0])
	rest = rest[1:]
	if k > maxCommitHashes || len(rest) < k*sha256.Size+4 {
		return bad("commit hashes")
	}
	for i := range k {
		var h [sha256.Size]byte
		copy(h[:], rest[i*sha256.Size:])
		r.commits = append(r.commits, h)
	}
	rest = rest[k*sha256.Size:]
	s := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	if s > MaxStateSize || int(s) != len(rest) {
		return bad("state length")
	}
	r.state = bytes.Clone(rest)
	if (r.status == StatusWaiting) != (len(r.state) == 0) {
		return bad("state presence")
	}
	return r, nil
}

// groupPrefix is the key prefix of a group's entries in node.deferred and
// node.held.
func groupPrefix(id []byte) []byte { return append([]byte{byte(len(id))}, id...) }

func seqKey(id []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(groupPrefix(id), seq)
}

// deferred is a message kept for later.
type deferred struct {
	key      []byte
	received time.Time
	via      string
	data     []byte
}

func encodeDeferred(received time.Time, via string, data []byte) []byte {
	b := make([]byte, 0, 10+len(via)+len(data))
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(received.UnixMilli()))
	b = append(b, byte(len(via)))
	b = append(b, via...)
	return append(b, data...)
}

func decodeDeferred(k, v []byte) (deferred, error) {
	if len(v) < 10 || v[0] != recordVersion {
		return deferred{}, fmt.Errorf("%w: deferred message header", ErrCorrupt)
	}
	n := int(v[9])
	if n > maxViaSize || len(v) < 10+n+1 {
		return deferred{}, fmt.Errorf("%w: deferred message lengths", ErrCorrupt)
	}
	return deferred{
		key:      bytes.Clone(k),
		received: time.UnixMilli(int64(binary.BigEndian.Uint64(v[1:]))),
		via:      string(v[10 : 10+n]),
		data:     bytes.Clone(v[10+n:]),
	}, nil
}

// listPrefix returns the keys and values under prefix in bucket, in order.
func listPrefix(tx *bolt.Tx, bucket, prefix []byte) (keys, vals [][]byte) {
	c := tx.Bucket(bucket).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		keys = append(keys, bytes.Clone(k))
		vals = append(vals, bytes.Clone(v))
	}
	return keys, vals
}

// putSeq stores v under the group's next key in bucket, refusing beyond
// limit entries for the group (and total entries, if total > 0).
func putSeq(tx *bolt.Tx, bucket, id, v []byte, limit, total int) (bool, error) {
	b := tx.Bucket(bucket)
	if total > 0 && b.Stats().KeyN >= total {
		return false, nil
	}
	keys, _ := listPrefix(tx, bucket, groupPrefix(id))
	if len(keys) >= limit {
		return false, nil
	}
	seq, err := b.NextSequence()
	if err != nil {
		return false, err
	}
	return true, b.Put(seqKey(id, seq), v)
}
