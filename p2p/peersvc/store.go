package peersvc

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quicproquo/qpq/internal/chanid"
	bolt "go.etcd.io/bbolt"
)

// Bucket layout, all under one top-level bucket in the node's bbolt file:
//
//	p2p.peersvc/
//	  keypackages/  seq (8, big endian)  → TLS-encoded KeyPackage
//	  inbox/        seq (8, big endian)  → delivery record (below)
//	  channels/     peer identity key (32) → channel record (below)
//	  meta/         "hybrid-key" → X-Wing public key
//	                "last-resort-kp" → the last-resort key package
//	                "inbox-count", "inbox-bytes" → uint64 big endian
//
// Sequences come from each bucket's persistent NextSequence, so inbox
// seqs strictly increase for the life of the file, across Acks and
// restarts.
//
// Delivery record, version 1:
//
//	0x01 | sender key (32) | received, unix ns (8, BE) | len(channel) (1) | channel | payload
//
// Channel record, version 1:
//
//	0x01 | self initiates (1: 0 or 1) | channel id (16)
var (
	bucketRoot        = []byte("p2p.peersvc")
	bucketKeyPackages = []byte("keypackages")
	bucketInbox       = []byte("inbox")
	bucketChannels    = []byte("channels")
	bucketMeta        = []byte("meta")

	keyHybrid     = []byte("hybrid-key")
	keyLastResort = []byte("last-resort-kp")
	keyInboxCount = []byte("inbox-count")
	keyInboxBytes = []byte("inbox-bytes")
)

const (
	recordVersion   = 1
	deliveryHeader  = 1 + ed25519.PublicKeySize + 8 + 1
	channelRecordSz = 1 + 1 + chanid.Size
	// MaxChannelIDSize bounds the channel label stored with a delivery.
	MaxChannelIDSize = 255
)

// ErrCorrupt reports a stored record this version cannot read.
var ErrCorrupt = errors.New("peersvc: corrupt record in store")

// Delivery is one message in this node's P2P inbox.
type Delivery struct {
	Seq       uint64
	Sender    ed25519.PublicKey // authenticated by the P2P link, not claimed
	ChannelID []byte            // as the sender gave it; empty for none
	Payload   []byte
	Received  time.Time
}

// Channel is this node's record of its 1:1 channel with a peer.
type Channel struct {
	ID   [chanid.Size]byte
	Peer ed25519.PublicKey
	// SelfInitiates is true when this node is the MLS initiator of the
	// channel (its wasNew is true): it creates the group and sends the
	// Welcome; the peer waits for it.
	SelfInitiates bool
}

// Store keeps what a node serves to its peers in the node's bbolt file:
// its key packages, hybrid key, P2P inbox and channel table. Every write
// is committed (fsync) before the method returns. Safe for concurrent use.
type Store struct {
	db *bolt.DB

	mu      sync.Mutex    // guards inboxCh
	inboxCh chan struct{} // closed and replaced after each inbox commit
}

// NewStore opens the store's buckets in db, creating them if needed. The
// node owns db and closes it after everything using the store has stopped.
func NewStore(db *bolt.DB) (*Store, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketRoot)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketKeyPackages, bucketInbox, bucketChannels, bucketMeta} {
			if _, err := root.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("peersvc: creating buckets: %w", err)
	}
	return &Store{db: db, inboxCh: make(chan struct{})}, nil
}

func bucket(tx *bolt.Tx, name []byte) *bolt.Bucket { return tx.Bucket(bucketRoot).Bucket(name) }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// AddKeyPackages stores single-use key packages for peers to fetch.
func (s *Store) AddKeyPackages(kps ...[]byte) error {
	for _, kp := range kps {
		if len(kp) == 0 || len(kp) > MaxKeyPackageSize {
			return fmt.Errorf("peersvc: key package of %d bytes: want 1 to %d", len(kp), MaxKeyPackageSize)
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := bucket(tx, bucketKeyPackages)
		if b.Stats().KeyN+len(kps) > MaxKeyPackages {
			return fmt.Errorf("peersvc: more than %d key packages", MaxKeyPackages)
		}
		for _, kp := range kps {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(u64(seq), kp); err != nil {
				return err
			}
		}
		return nil
	})
}

// KeyPackageCount returns how many key packages are left.
func (s *Store) KeyPackageCount() (int, error) {
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		n = bucket(tx, bucketKeyPackages).Stats().KeyN
		return nil
	})
	return n, err
}

// SetLastResortKeyPackage stores the key package served when the
// single-use ones are gone (RFC 9420's last_resort: it may be used by
// several Welcomes). It replaces an earlier one.
func (s *Store) SetLastResortKeyPackage(kp []byte) error {
	if len(kp) == 0 || len(kp) > MaxKeyPackageSize {
		return fmt.Errorf("peersvc: key package of %d bytes: want 1 to %d", len(kp), MaxKeyPackageSize)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketMeta).Put(keyLastResort, kp)
	})
}

// LastResortKeyPackage returns the last-resort key package, or nil.
func (s *Store) LastResortKeyPackage() ([]byte, error) {
	var kp []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		kp = bytes.Clone(bucket(tx, bucketMeta).Get(keyLastResort))
		return nil
	})
	return kp, err
}

// popKeyPackage removes and returns the oldest key package; when none is
// left it returns the last-resort one (without removing it), or nil. The
// removal is on disk before it returns.
func (s *Store) popKeyPackage() ([]byte, error) {
	var kp []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		c := bucket(tx, bucketKeyPackages).Cursor()
		k, v := c.First()
		if k == nil {
			kp = bytes.Clone(bucket(tx, bucketMeta).Get(keyLastResort))
			return nil
		}
		kp = bytes.Clone(v)
		return c.Delete()
	})
	return kp, err
}

// SetHybridKey stores this node's X-Wing public key.
func (s *Store) SetHybridKey(key []byte) error {
	if len(key) != HybridKeySize {
		return fmt.Errorf("peersvc: hybrid key of %d bytes: want %d", len(key), HybridKeySize)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketMeta).Put(keyHybrid, key)
	})
}

// HybridKey returns this node's X-Wing public key, or nil if none is set.
func (s *Store) HybridKey() ([]byte, error) {
	var key []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		key = bytes.Clone(bucket(tx, bucketMeta).Get(keyHybrid))
		return nil
	})
	return key, err
}

// errInboxFull is returned by enqueue when a limit would be exceeded.
var errInboxFull = errors.New("inbox full")

// enqueue appends n copies of a delivery to the inbox in one transaction
// and returns their seqs, after the commit.
func (s *Store) enqueue(sender ed25519.PublicKey, channelID, payload []byte, n int, lim Limits) ([]uint64, error) {
	if len(channelID) > MaxChannelIDSize {
		return nil, fmt.Errorf("peersvc: channel id of %d bytes", len(channelID))
	}
	rec := make([]byte, 0, deliveryHeader+len(channelID)+len(payload))
	rec = append(rec, recordVersion)
	rec = append(rec, sender...)
	rec = binary.BigEndian.AppendUint64(rec, uint64(time.Now().UnixNano()))
	rec = append(rec, byte(len(channelID)))
	rec = append(rec, channelID...)
	rec = append(rec, payload...)

	seqs := make([]uint64, 0, n)
	err := s.db.Update(func(tx *bolt.Tx) error {
		in, meta := bucket(tx, bucketInbox), bucket(tx, bucketMeta)
		count, size := getU64(meta, keyInboxCount), getU64(meta, keyInboxBytes)
		count += uint64(n)
		size += uint64(n) * uint64(len(rec))
		if count > uint64(lim.MaxInboxMessages) || size > uint64(lim.MaxInboxBytes) {
			return errInboxFull
		}
		for range n {
			seq, err := in.NextSequence()
			if err != nil {
				return err
			}
			if err := in.Put(u64(seq), rec); err != nil {
				return err
			}
			seqs = append(seqs, seq)
		}
		if err := meta.Put(keyInboxCount, u64(count)); err != nil {
			return err
		}
		return meta.Put(keyInboxBytes, u64(size))
	})
	if err != nil {
		return nil, err
	}
	s.signalInbox()
	return seqs, nil
}

func getU64(b *bolt.Bucket, key []byte) uint64 {
	if v := b.Get(key); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (s *Store) signalInbox() {
	s.mu.Lock()
	close(s.inboxCh)
	s.inboxCh = make(chan struct{})
	s.mu.Unlock()
}

// InboxChanged returns a channel that is closed at the next commit to the
// inbox. Take it before Peek so that no delivery can slip in between:
//
//	for {
//		changed := store.InboxChanged()
//		ds, _ := store.Peek(0)
//		… process ds, then store.Ack(last seq) …
//		<-changed
//	}
func (s *Store) InboxChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inboxCh
}

// Peek returns up to limit deliveries (all if limit <= 0) in seq order,
// without removing them.
func (s *Store) Peek(limit int) ([]Delivery, error) {
	var out []Delivery
	err := s.db.View(func(tx *bolt.Tx) error {
		c := bucket(tx, bucketInbox).Cursor()
		for k, v := c.First(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			d, err := decodeDelivery(k, v)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// Ack removes every delivery with seq <= upTo.
func (s *Store) Ack(upTo uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		in, meta := bucket(tx, bucketInbox), bucket(tx, bucketMeta)
		count, size := getU64(meta, keyInboxCount), getU64(meta, keyInboxBytes)
		c := in.Cursor()
		for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upTo; k, v = c.First() {
			count -= min(count, 1)
			size -= min(size, uint64(len(v)))
			if err := c.Delete(); err != nil {
				return err
			}
		}
		if err := meta.Put(keyInboxCount, u64(count)); err != nil {
			return err
		}
		return meta.Put(keyInboxBytes, u64(size))
	})
}

func decodeDelivery(k, v []byte) (Delivery, error) {
	if len(k) != 8 || len(v) < deliveryHeader || v[0] != recordVersion {
		return Delivery{}, ErrCorrupt
	}
	n := int(v[deliveryHeader-1])
	if len(v) < deliveryHeader+n {
		return Delivery{}, ErrCorrupt
	}
	return Delivery{
		Seq:       binary.BigEndian.Uint64(k),
		Sender:    ed25519.PublicKey(bytes.Clone(v[1 : 1+ed25519.PublicKeySize])),
		Received:  time.Unix(0, int64(binary.BigEndian.Uint64(v[1+ed25519.PublicKeySize:]))),
		ChannelID: bytes.Clone(v[deliveryHeader : deliveryHeader+n]),
		Payload:   bytes.Clone(v[deliveryHeader+n:]),
	}, nil
}

// Channel returns this node's channel with peer, if it has one.
func (s *Store) Channel(peer ed25519.PublicKey) (Channel, bool, error) {
	var ch Channel
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		ch, ok, err = getChannel(tx, peer)
		return err
	})
	return ch, ok, err
}

// RecordChannel records the channel with peer unless one is recorded
// already, and returns the record that holds. The node calls it for a
// channel it created through a home server, so that the P2P link answers
// with the same roles; the first decision always stands.
func (s *Store) RecordChannel(self, peer ed25519.PublicKey, selfInitiates bool) (Channel, error) {
	var ch Channel
	err := s.db.Update(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		if ch, ok, err = getChannel(tx, peer); err != nil || ok {
			return err
		}
		ch = Channel{ID: chanid.Derive(self, peer), Peer: peer, SelfInitiates: selfInitiates}
		return putChannel(tx, ch)
	})
	return ch, err
}

// ForgetChannel deletes the record of the channel with peer (when the user
// deletes the conversation); the next createChannel decides roles anew.
func (s *Store) ForgetChannel(peer ed25519.PublicKey) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketChannels).Delete(peer)
	})
}

func getChannel(tx *bolt.Tx, peer ed25519.PublicKey) (Channel, bool, error) {
	v := bucket(tx, bucketChannels).Get(peer)
	if v == nil {
		return Channel{}, false, nil
	}
	if len(v) != channelRecordSz || v[0] != recordVersion || v[1] > 1 {
		return Channel{}, false, ErrCorrupt
	}
	ch := Channel{Peer: bytes.Clone(peer), SelfInitiates: v[1] == 1}
	copy(ch.ID[:], v[2:])
	return ch, true, nil
}

func putChannel(tx *bolt.Tx, ch Channel) error {
	v := make([]byte, 0, channelRecordSz)
	v = append(v, recordVersion, 0)
	if ch.SelfInitiates {
		v[1] = 1
	}
	v = append(v, ch.ID[:]...)
	return bucket(tx, bucketChannels).Put(ch.Peer, v)
}
