// Package history stores the messages of a node's conversations in its
// bbolt database and remembers which message ids each conversation has seen,
// so a message that arrives twice (by the direct path and through the home
// server) is stored, and shown, once.
//
// Messages are kept in the order they were appended, which is the order the
// node processed them (MLS order), not the senders' clocks. De-duplication is
// per conversation: an id seen in one conversation does not suppress a
// message in another, so one group's member cannot hide messages elsewhere
// by reusing their ids. The package stores what it is given; it does not
// decrypt, render or expire anything.
//
// # Storage
//
// Bucket "history" holds one sub-bucket per conversation, named by the
// conversation id, which holds two buckets:
//
//	"m"  seq (8 bytes, big-endian, from the bucket sequence) → message record
//	"i"  message id (16 bytes) → seq
//
// A message record:
//
//	offset size  field
//	0      1     format = 0x01
//	1      16    message id
//	17     32    sender identity key
//	49     8     time, Unix milliseconds (int64)
//	57     1     via length v, v ≤ MaxViaSize
//	58     v     via
//	58+v   n     text, n ≤ MaxTextSize
package history

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/node/payload"
)

// Limits on what Append accepts and Last returns.
const (
	MaxConversationSize = 255                 // a channel id or MLS group id
	MaxTextSize         = payload.MaxBodySize // the largest text a payload carries
	MaxViaSize          = 32                  // "direct", "server", …
	MaxList             = 1000                // Last returns at most this many
)

// SenderSize is the length of a sender's identity key.
const SenderSize = 32

var (
	rootBucket = []byte("history")
	msgBucket  = []byte("m")
	idBucket   = []byte("i")
)

const formatV1 = 0x01

// Errors.
var (
	ErrInvalid = errors.New("history: invalid message")
	ErrCorrupt = errors.New("history: stored message is corrupt")
)

// Message is one message of a conversation.
type Message struct {
	// Conversation is the conversation's id (channel or MLS group id), 1 to
	// MaxConversationSize bytes.
	Conversation []byte
	// ID is the payload's message id, the key of de-duplication.
	ID payload.ID
	// Sender is the sender's identity key.
	Sender [SenderSize]byte
	// Text is the message text.
	Text string
	// Time is the sender's time, kept to the millisecond.
	Time time.Time
	// Via is the path the message came by ("direct", "server"), or what the
	// node records for its own messages.
	Via string
	// Seq is the message's position in its conversation, from 1; Append
	// sets it.
	Seq uint64
}

// History is the conversation history in a bbolt database. Its methods are
// safe for concurrent use.
type History struct {
	db *bolt.DB
}

// New returns the history kept in db, creating its bucket. db must not be
// opened with NoSync: Append's durability rests on bbolt's fsync at commit.
func New(db *bolt.DB) (*History, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(rootBucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("history: create bucket: %w", err)
	}
	return &History{db: db}, nil
}

// Append stores m durably unless its conversation already has a message
// with m.ID. It returns the seq of the stored message (the earlier one for a
// duplicate) and whether m was a duplicate; a duplicate is not stored again.
func (h *History) Append(m Message) (seq uint64, dup bool, err error) {
	err = h.db.Update(func(tx *bolt.Tx) error {
		seq, dup, err = h.AppendTx(tx, m)
		return err
	})
	return seq, dup, err
}

// AppendTx is Append inside the caller's read-write transaction, so that a
// message is stored together with the state that decrypting it changed.
func (h *History) AppendTx(tx *bolt.Tx, m Message) (seq uint64, dup bool, err error) {
	switch {
	case len(m.Conversation) == 0 || len(m.Conversation) > MaxConversationSize:
		return 0, false, fmt.Errorf("%w: conversation id of %d bytes, want 1 to %d",
			ErrInvalid, len(m.Conversation), MaxConversationSize)
	case m.ID.IsZero():
		return 0, false, fmt.Errorf("%w: no message id", ErrInvalid)
	case len(m.Text) > MaxTextSize:
		return 0, false, fmt.Errorf("%w: text of %d bytes, limit %d", ErrInvalid, len(m.Text), MaxTextSize)
	case len(m.Via) > MaxViaSize:
		return 0, false, fmt.Errorf("%w: via of %d bytes, limit %d", ErrInvalid, len(m.Via), MaxViaSize)
	}
	err = func() error {
		conv, err := tx.Bucket(rootBucket).CreateBucketIfNotExists(m.Conversation)
		if err != nil {
			return err
		}
		ids, err := conv.CreateBucketIfNotExists(idBucket)
		if err != nil {
			return err
		}
		msgs, err := conv.CreateBucketIfNotExists(msgBucket)
		if err != nil {
			return err
		}
		if v := ids.Get(m.ID[:]); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("%w: id index entry of %d bytes", ErrCorrupt, len(v))
			}
			seq, dup = binary.BigEndian.Uint64(v), true
			return nil
		}
		if seq, err = msgs.NextSequence(); err != nil {
			return err
		}
		k := binary.BigEndian.AppendUint64(nil, seq)
		if err := msgs.Put(k, encode(m)); err != nil {
			return err
		}
		return ids.Put(m.ID[:], k)
	}()
	if err != nil {
		return 0, false, fmt.Errorf("history: append: %w", err)
	}
	return seq, dup, nil
}

// Has reports whether conversation has a message with id.
func (h *History) Has(conversation []byte, id payload.ID) (bool, error) {
	var found bool
	err := h.db.View(func(tx *bolt.Tx) error {
		ids := convBucket(tx, conversation, idBucket)
		found = ids != nil && ids.Get(id[:]) != nil
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("history: %w", err)
	}
	return found, nil
}

// Last returns the last n messages of conversation, oldest first; n is
// capped at MaxList. An unknown conversation has no messages.
func (h *History) Last(conversation []byte, n int) ([]Message, error) {
	n = min(n, MaxList)
	if n <= 0 {
		return nil, nil
	}
	var out []Message
	err := h.db.View(func(tx *bolt.Tx) error {
		msgs := convBucket(tx, conversation, msgBucket)
		if msgs == nil {
			return nil
		}
		c := msgs.Cursor()
		for k, v := c.Last(); k != nil && len(out) < n; k, v = c.Prev() {
			m, err := decode(conversation, k, v)
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	slices.Reverse(out)
	return out, nil
}

// convBucket returns the named bucket of a conversation, or nil.
func convBucket(tx *bolt.Tx, conversation, name []byte) *bolt.Bucket {
	if len(conversation) == 0 {
		return nil
	}
	conv := tx.Bucket(rootBucket).Bucket(conversation)
	if conv == nil {
		return nil
	}
	return conv.Bucket(name)
}

const recordHeaderSize = 1 + payload.IDSize + SenderSize + 8 + 1

func encode(m Message) []byte {
	v := make([]byte, 0, recordHeaderSize+len(m.Via)+len(m.Text))
	v = append(v, formatV1)
	v = append(v, m.ID[:]...)
	v = append(v, m.Sender[:]...)
	v = binary.BigEndian.AppendUint64(v, uint64(m.Time.UnixMilli()))
	v = append(v, byte(len(m.Via)))
	v = append(v, m.Via...)
	return append(v, m.Text...)
}

// decode decodes a stored record, copying out of bbolt's memory.
func decode(conversation, k, v []byte) (Message, error) {
	if len(k) != 8 || len(v) < recordHeaderSize || v[0] != formatV1 {
		return Message{}, fmt.Errorf("%w: bad header", ErrCorrupt)
	}
	via := int(v[recordHeaderSize-1])
	rest := v[recordHeaderSize:]
	if via > MaxViaSize || via > len(rest) || len(rest)-via > MaxTextSize {
		return Message{}, fmt.Errorf("%w: bad lengths", ErrCorrupt)
	}
	m := Message{
		Conversation: bytes.Clone(conversation),
		Time:         time.UnixMilli(int64(binary.BigEndian.Uint64(v[1+payload.IDSize+SenderSize:]))),
		Via:          string(rest[:via]),
		Text:         string(rest[via:]),
		Seq:          binary.BigEndian.Uint64(k),
	}
	copy(m.ID[:], v[1:])
	copy(m.Sender[:], v[1+payload.IDSize:])
	return m, nil
}
