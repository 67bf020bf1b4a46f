package store

import (
	"bytes"
	"encoding/binary"

	"go.etcd.io/bbolt"
)

// Tags after the identity in a queue id.
const (
	tagInbox        = 0x00 // identity | 0x00: the default inbox
	tagChannelInbox = 0x01 // identity | 0x01 | channel: a channel inbox
	tagKeyPackages  = 0x02 // identity | 0x02: the key-package queue
)

// Inbox names one message queue: a recipient and a channel (zero = the
// default inbox).
type Inbox struct {
	Recipient Key
	Channel   ChannelID
}

func (in Inbox) id() []byte {
	b := make([]byte, 0, KeySize+1+len(in.Channel))
	b = append(b, in.Recipient[:]...)
	if in.Channel.IsZero() {
		return append(b, tagInbox)
	}
	b = append(b, tagChannelInbox)
	return append(b, in.Channel[:]...)
}

func isInboxID(id []byte) bool {
	return len(id) == KeySize+1 && id[KeySize] == tagInbox ||
		len(id) == KeySize+1+len(ChannelID{}) && id[KeySize] == tagChannelInbox
}

func keyPackageQueueID(identity Key) []byte {
	return append(append(make([]byte, 0, KeySize+1), identity[:]...), tagKeyPackages)
}

// Envelope is a queued message with its sequence number.
type Envelope struct {
	Seq  uint64
	Data []byte
}

func itemKey(queueID []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, len(queueID)+8), queueID...), seq)
}

func getQueueState(tx *bbolt.Tx, id []byte) (queueState, error) {
	v := tx.Bucket(bQueues).Get(id)
	if v == nil {
		return queueState{}, nil
	}
	return decodeQueueState(v)
}

// push appends data to queue id within tx and returns its sequence number.
// max caps the depth; full is returned beyond it.
func push(tx *bbolt.Tx, id, data []byte, max int, full error) (uint64, error) {
	st, err := getQueueState(tx, id)
	if err != nil {
		return 0, err
	}
	if st.depth >= uint64(max) {
		return 0, full
	}
	st.next++
	st.depth++
	if err := tx.Bucket(bItems).Put(itemKey(id, st.next), data); err != nil {
		return 0, err
	}
	return st.next, tx.Bucket(bQueues).Put(id, st.encode())
}

// scan visits the items of queue id in sequence order until visit returns
// false. Keys and values are only valid during the transaction.
func scan(tx *bbolt.Tx, id []byte, visit func(seq uint64, data []byte) bool) {
	c := tx.Bucket(bItems).Cursor()
	for k, v := c.Seek(id); k != nil && len(k) == len(id)+8 && bytes.HasPrefix(k, id); k, v = c.Next() {
		if !visit(binary.BigEndian.Uint64(k[len(id):]), v) {
			return
		}
	}
}

// take collects up to limit items (0 = no limit) of at most maxBytes in
// total (at least one item), copied out of the transaction.
func take(tx *bbolt.Tx, id []byte, limit, maxBytes int) []Envelope {
	var out []Envelope
	size := 0
	scan(tx, id, func(seq uint64, data []byte) bool {
		if len(out) > 0 && size+len(data) > maxBytes {
			return false
		}
		size += len(data)
		out = append(out, Envelope{Seq: seq, Data: bytes.Clone(data)})
		return limit == 0 || len(out) < limit
	})
	return out
}

// remove deletes the given items of queue id and lowers its depth.
func remove(tx *bbolt.Tx, id []byte, seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	st, err := getQueueState(tx, id)
	if err != nil {
		return err
	}
	items := tx.Bucket(bItems)
	for _, seq := range seqs {
		if err := items.Delete(itemKey(id, seq)); err != nil {
			return err
		}
	}
	if uint64(len(seqs)) > st.depth {
		return corrupt("queue state", "depth %d below %d queued items", st.depth, len(seqs))
	}
	st.depth -= uint64(len(seqs))
	return tx.Bucket(bQueues).Put(id, st.encode())
}

func seqsOf(envs []Envelope) []uint64 {
	seqs := make([]uint64, len(envs))
	for i, e := range envs {
		seqs[i] = e.Seq
	}
	return seqs
}

// depth reads a queue's depth in its own read transaction.
func (s *Store) depth(id []byte) (uint64, error) {
	var st queueState
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		st, err = getQueueState(tx, id)
		return err
	})
	return st.depth, err
}

// Enqueue appends payload to the inbox (to[i], channel) of every recipient
// in one transaction and returns their sequence numbers in request order.
// A non-zero channel must exist and have exactly from and the recipient as
// members. It returns once the messages are on disk, and wakes waiters.
func (s *Store) Enqueue(from Key, to []Key, channel ChannelID, payload []byte) ([]uint64, error) {
	d, err := s.Deliver(Delivery{From: from, Channel: channel, Payload: payload, Local: to})
	return d.Local, err
}

// checkChannel verifies that channel exists and that each recipient and
// from are its two members. Channels are never deleted, so checking
// before the write transaction is as good as checking inside it.
func (s *Store) checkChannel(from Key, to []Key, channel ChannelID) error {
	ch, ok, err := s.Channel(channel)
	if err != nil {
		return err
	}
	if !ok {
		return ErrChannelNotFound
	}
	for _, r := range to {
		if r == from || !ch.Has(from) || !ch.Has(r) {
			return ErrNotChannelMember
		}
	}
	return nil
}

// Fetch removes and returns up to limit messages (0 = all) of the inbox in
// seq order, at most maxBytes of payload in total (but at least one
// message). The removal is on disk before it returns.
func (s *Store) Fetch(in Inbox, limit, maxBytes int) ([]Envelope, error) {
	id := in.id()
	if d, err := s.depth(id); err != nil || d == 0 {
		return nil, err // nothing to drain: skip the write transaction
	}
	var out []Envelope
	err := s.batch(func(tx *bbolt.Tx) error {
		out = take(tx, id, limit, maxBytes)
		return remove(tx, id, seqsOf(out))
	})
	if err != nil {
		return nil, err
	}
	s.queued.Add(-int64(len(out)))
	return out, nil
}

// Peek returns up to limit messages (0 = all) of the inbox in seq order,
// at most maxBytes in total (but at least one), without removing them.
func (s *Store) Peek(in Inbox, limit, maxBytes int) ([]Envelope, error) {
	var out []Envelope
	err := s.view(func(tx *bbolt.Tx) error {
		out = take(tx, in.id(), limit, maxBytes)
		return nil
	})
	return out, err
}

// Ack removes every message of the inbox with seq <= upTo and returns how
// many it removed.
func (s *Store) Ack(in Inbox, upTo uint64) (int, error) {
	id := in.id()
	below := func(tx *bbolt.Tx) []uint64 {
		var seqs []uint64
		scan(tx, id, func(seq uint64, _ []byte) bool {
			if seq > upTo {
				return false
			}
			seqs = append(seqs, seq)
			return true
		})
		return seqs
	}
	var any bool
	if err := s.view(func(tx *bbolt.Tx) error { any = len(below(tx)) > 0; return nil }); err != nil || !any {
		return 0, err
	}
	var n int
	err := s.batch(func(tx *bbolt.Tx) error {
		seqs := below(tx)
		n = len(seqs)
		return remove(tx, id, seqs)
	})
	if err != nil {
		return 0, err
	}
	s.queued.Add(-int64(n))
	return n, nil
}

// InboxState reports the last seq handed out in the inbox (0 = none) and
// how many messages wait in it.
func (s *Store) InboxState(in Inbox) (lastSeq, depth uint64, err error) {
	var st queueState
	err = s.view(func(tx *bbolt.Tx) error {
		var err error
		st, err = getQueueState(tx, in.id())
		return err
	})
	return st.next, st.depth, err
}

// Wait returns a channel that receives a value after the next enqueue
// into the inbox commits, and a function that must be called to stop
// waiting. Subscribe before checking the inbox, so an enqueue between the
// check and the wait is not missed.
func (s *Store) Wait(in Inbox) (<-chan struct{}, func()) {
	return s.hub.subscribe(string(in.id()))
}

// Waiting returns how many Wait subscriptions are open.
func (s *Store) Waiting() int { return s.hub.waiting() }

// PutKeyPackage appends a key package to identity's queue.
func (s *Store) PutKeyPackage(identity Key, pkg []byte) error {
	id := keyPackageQueueID(identity)
	return s.batch(func(tx *bbolt.Tx) error {
		_, err := push(tx, id, pkg, s.opts.MaxKeyPackages, ErrTooManyKeyPackages)
		return err
	})
}

// PopKeyPackage removes and returns identity's oldest key package.
// Concurrent pops never return the same package. When none is left it
// returns identity's last-resort package, which stays (see
// PutLastResortKeyPackage), or nil when there is none either.
func (s *Store) PopKeyPackage(identity Key) ([]byte, error) {
	id := keyPackageQueueID(identity)
	if d, err := s.depth(id); err != nil || d == 0 {
		if err != nil {
			return nil, err
		}
		return s.LastResortKeyPackage(identity)
	}
	var pkg []byte
	err := s.batch(func(tx *bbolt.Tx) error {
		got := take(tx, id, 1, 0)
		pkg = nil
		if len(got) == 1 {
			pkg = got[0].Data
		} else if v := tx.Bucket(bLastResort).Get(identity[:]); v != nil {
			pkg = bytes.Clone(v) // drained meanwhile
		}
		return remove(tx, id, seqsOf(got))
	})
	return pkg, err
}

// PutLastResortKeyPackage stores identity's last-resort key package (an
// MLS KeyPackage with the last_resort extension), replacing an older one:
// PopKeyPackage hands it out, without removing it, once the ordinary ones
// are gone, so that a drained stock never stops new contacts.
func (s *Store) PutLastResortKeyPackage(identity Key, pkg []byte) error {
	return s.batch(func(tx *bbolt.Tx) error {
		return tx.Bucket(bLastResort).Put(identity[:], pkg)
	})
}

// LastResortKeyPackage returns identity's last-resort key package, or nil.
func (s *Store) LastResortKeyPackage(identity Key) ([]byte, error) {
	var pkg []byte
	err := s.view(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bLastResort).Get(identity[:]); v != nil {
			pkg = bytes.Clone(v)
		}
		return nil
	})
	return pkg, err
}

// KeyPackageCount returns how many key packages identity has stored.
func (s *Store) KeyPackageCount(identity Key) (int, error) {
	d, err := s.depth(keyPackageQueueID(identity))
	return int(d), err
}
