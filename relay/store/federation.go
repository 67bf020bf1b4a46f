package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"

	"go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/internal/chanid"
)

// Federation state: the home domain of identities that live at other
// servers, the queues of deliveries waiting for other servers, and the
// de-duplication marks of deliveries other servers relayed here.

// tagRelayQueue follows a domain's hash in the id of its outgoing queue.
const tagRelayQueue = 0x03

// Limits of federation records.
const (
	// MaxDomainSize bounds a stored domain name.
	MaxDomainSize = 253
	// MaxRemoteName bounds a stored remote username.
	MaxRemoteName = 255
	// MaxRelayRecipients bounds the recipients of one queued delivery.
	MaxRelayRecipients = 1 << 12
	// StreamSize is the size of a relay stream id.
	StreamSize = 16
	// DefaultMaxRelayQueue caps the deliveries queued for one server.
	DefaultMaxRelayQueue = 100_000
)

// Outcomes callers branch on.
var (
	// ErrRelayQueueFull is returned when the queue for a server holds
	// MaxRelayQueue deliveries.
	ErrRelayQueueFull = errors.New("store: the queue for that server is full")
	// ErrRemoteClaimed is returned by PutRemote for a resolved home that
	// contradicts another domain's resolve of the same key: the first
	// stands, so that one peer cannot divert another's users.
	ErrRemoteClaimed = errors.New("store: another domain's server resolved this key")
)

// Remote is what this server knows of an identity that lives at another
// server.
//
//	v1 | resolved u8 | updated unix-nanos i64 | domain len u8 | domain | name
type Remote struct {
	Domain string
	// Name is its username there, when known (from a resolve).
	Name string
	// Resolved is set when the domain's own server named it (a resolve
	// answer), and clear when it was only seen sending from there;
	// a resolve overrides what was seen, never the other way round.
	Resolved bool
	Updated  time.Time
}

const remoteFixedLen = 1 + 1 + 8 + 1

func (r Remote) encode() []byte {
	b := make([]byte, 0, remoteFixedLen+len(r.Domain)+len(r.Name))
	b = append(b, recordV1)
	if r.Resolved {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(r.Updated.UnixNano()))
	b = append(b, byte(len(r.Domain)))
	b = append(b, r.Domain...)
	return append(b, r.Name...)
}

func decodeRemote(b []byte) (Remote, error) {
	if len(b) < remoteFixedLen {
		return Remote{}, corrupt("remote", "length %d", len(b))
	}
	if b[0] != recordV1 || b[1] > 1 {
		return Remote{}, corrupt("remote", "version %d, flag %d", b[0], b[1])
	}
	n := int(b[remoteFixedLen-1])
	rest := b[remoteFixedLen:]
	if n == 0 || n > len(rest) || len(rest)-n > MaxRemoteName {
		return Remote{}, corrupt("remote", "domain length %d of %d", n, len(rest))
	}
	return Remote{
		Resolved: b[1] == 1,
		Updated:  time.Unix(0, int64(binary.BigEndian.Uint64(b[2:]))),
		Domain:   string(rest[:n]),
		Name:     string(rest[n:]),
	}, nil
}

// PutRemote records that identity lives at r.Domain. A resolved record
// replaces one that was only seen, or one resolved by the same domain; one
// that was only seen never replaces a resolved one; a resolve by another
// domain than an earlier one is refused (ErrRemoteClaimed). Keys
// registered here are refused (ErrIdentityTaken).
func (s *Store) PutRemote(identity Key, r Remote) error {
	if r.Domain == "" || len(r.Domain) > MaxDomainSize || len(r.Name) > MaxRemoteName {
		return errors.New("store: remote domain must be 1 to 253 bytes, its name at most 255")
	}
	if r.Updated.IsZero() {
		r.Updated = s.now()
	}
	rec := r.encode()
	return s.batch(func(tx *bbolt.Tx) error {
		if tx.Bucket(bIdents).Get(identity[:]) != nil {
			return ErrIdentityTaken
		}
		bkt := tx.Bucket(bRemotes)
		if v := bkt.Get(identity[:]); v != nil {
			old, err := decodeRemote(v)
			switch {
			case err != nil:
				return err
			case old.Resolved && !r.Resolved:
				return nil
			case old.Resolved && old.Domain != r.Domain:
				return ErrRemoteClaimed
			}
		}
		return bkt.Put(identity[:], rec)
	})
}

// Homes tells for each identity where it lives: "" for one registered
// here or not known at all, else the domain of its server.
func (s *Store) Homes(identities ...Key) ([]string, error) {
	out := make([]string, len(identities))
	err := s.view(func(tx *bbolt.Tx) error {
		idents, remotes := tx.Bucket(bIdents), tx.Bucket(bRemotes)
		for i, id := range identities {
			if idents.Get(id[:]) != nil {
				continue
			}
			if v := remotes.Get(id[:]); v != nil {
				r, err := decodeRemote(v)
				if err != nil {
					return err
				}
				out[i] = r.Domain
			}
		}
		return nil
	})
	return out, err
}

// RemoteOf returns what is known of identity at other servers.
func (s *Store) RemoteOf(identity Key) (Remote, bool, error) {
	var r Remote
	var ok bool
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bRemotes).Get(identity[:])
		if v == nil {
			return nil
		}
		var err error
		r, err = decodeRemote(v)
		ok = err == nil
		return err
	})
	return r, ok, err
}

// IsLocal reports whether identity is registered here.
func (s *Store) IsLocal(identity Key) (bool, error) {
	var ok bool
	err := s.view(func(tx *bbolt.Tx) error {
		ok = tx.Bucket(bIdents).Get(identity[:]) != nil
		return nil
	})
	return ok, err
}

// ImportChannel records the 1:1 channel of a and b, decided at another
// server (federation: the home server of the lower key decides), unless
// it exists. It returns the channel's id.
func (s *Store) ImportChannel(a, b Key) (ChannelID, error) {
	if a == b {
		return ChannelID{}, ErrSameIdentity
	}
	id, rec := s.channelRecord(a, b)
	err := s.batch(func(tx *bbolt.Tx) error { return putIfAbsent(tx.Bucket(bChannels), id[:], rec) })
	return id, err
}

func (s *Store) channelRecord(a, b Key) (ChannelID, []byte) {
	id := ChannelID(chanid.Derive(a[:], b[:]))
	lo, hi := a, b
	if bytes.Compare(lo[:], hi[:]) > 0 {
		lo, hi = hi, lo
	}
	return id, Channel{Lo: lo, Hi: hi, Created: s.now()}.encode()
}

func putIfAbsent(b *bbolt.Bucket, k, v []byte) error {
	if b.Get(k) != nil {
		return nil
	}
	return b.Put(k, v)
}

// relayQueueID is the id of the queue of deliveries for domain's server.
func relayQueueID(domain string) []byte {
	h := sha256.Sum256([]byte("quicproquo/relay-queue/v1\x00" + domain))
	return append(h[:KeySize:KeySize], tagRelayQueue)
}

// RelayItem is a delivery queued for another server.
//
//	v1 | hops u8 | from [32] | channel [16] | n u16 | recipients [32]×n | payload
type RelayItem struct {
	Seq        uint64 // its position in the queue (not encoded: the item's key)
	Hops       uint8  // the hops value it goes out with
	From       Key
	Channel    ChannelID
	Recipients []Key
	Payload    []byte
}

const relayItemFixedLen = 1 + 1 + KeySize + 16 + 2

func (it RelayItem) encode() []byte {
	b := make([]byte, 0, relayItemFixedLen+KeySize*len(it.Recipients)+len(it.Payload))
	b = append(b, recordV1, it.Hops)
	b = append(b, it.From[:]...)
	b = append(b, it.Channel[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(it.Recipients)))
	for _, r := range it.Recipients {
		b = append(b, r[:]...)
	}
	return append(b, it.Payload...)
}

func decodeRelayItem(seq uint64, b []byte) (RelayItem, error) {
	if len(b) < relayItemFixedLen {
		return RelayItem{}, corrupt("relay item", "length %d", len(b))
	}
	if b[0] != recordV1 {
		return RelayItem{}, corrupt("relay item", "version %d", b[0])
	}
	it := RelayItem{Seq: seq, Hops: b[1]}
	copy(it.From[:], b[2:])
	copy(it.Channel[:], b[2+KeySize:])
	n := int(binary.BigEndian.Uint16(b[2+KeySize+16:]))
	rest := b[relayItemFixedLen:]
	if n == 0 || n > MaxRelayRecipients || len(rest) < n*KeySize+1 {
		return RelayItem{}, corrupt("relay item", "%d recipients in %d bytes", n, len(rest))
	}
	it.Recipients = make([]Key, n)
	for i := range it.Recipients {
		copy(it.Recipients[i][:], rest[i*KeySize:])
	}
	it.Payload = bytes.Clone(rest[n*KeySize:])
	return it, nil
}

// OutRelay is the part of a delivery that goes to another server.
type OutRelay struct {
	Domain     string
	Recipients []Key
	Hops       uint8
}

// Incoming identifies a delivery another server relayed here: a repeat of
// one already applied (same origin and stream, seq not above the last
// applied) is recognized and stores nothing.
//
//	fedin: origin | 0x00 | stream [16] -> v1 | last seq u64 | updated unix-nanos i64
type Incoming struct {
	Origin string
	Stream [StreamSize]byte
	Seq    uint64
	// LearnSender records the sender's home as Origin (unless its home
	// is known otherwise, or it is registered here).
	LearnSender bool
	// ImportChannel records the pair's channel (From and the one local
	// recipient) when it is missing: the other server's side decided it.
	ImportChannel bool
}

const fedinLen = 1 + 8 + 8

func fedinKey(origin string, stream [StreamSize]byte) []byte {
	k := make([]byte, 0, len(origin)+1+StreamSize)
	k = append(k, origin...)
	k = append(k, 0)
	return append(k, stream[:]...)
}

// Delivery is one payload from one sender to inboxes here and to other
// servers' queues, committed in one transaction: all or nothing.
type Delivery struct {
	From    Key
	Channel ChannelID // zero: the default inboxes
	Payload []byte
	Local   []Key      // recipients whose inbox is here
	Relays  []OutRelay // recipients at other servers, one entry per server
	// Incoming is set for a delivery relayed here by another server.
	Incoming *Incoming
}

// Delivered are the sequence numbers a Delivery got: in each local inbox,
// and in each server's queue (in the order of Delivery.Relays).
// Duplicate is set, and nothing was stored, for a repeated Incoming.
type Delivered struct {
	Local     []uint64
	Relays    []uint64
	Duplicate bool
}

// Deliver stores d in one transaction and returns once it is on disk. A
// non-zero channel must exist (or be imported, see Incoming) and have
// exactly From and each recipient as members: every recipient for a
// client's delivery, the local ones for a relayed one. Waiters on the
// inboxes and queues are woken.
func (s *Store) Deliver(d Delivery) (Delivered, error) { return s.SubmitDelivery(d)() }

// SubmitDelivery is Deliver in two steps: the checks run and the write is
// queued for the next group commit before it returns; the function it
// returns waits for the commit, wakes the inboxes' waiters and gives
// Deliver's results; call it exactly once. Deliveries
// submitted one after another commit in that order, so a caller that
// submits in the order its requests arrived, and then waits aside, lets
// many requests share a commit without reordering their seqs.
func (s *Store) SubmitDelivery(d Delivery) func() (Delivered, error) {
	fail := func(err error) func() (Delivered, error) {
		return func() (Delivered, error) { return Delivered{}, err }
	}
	if s.closed.Load() {
		return fail(ErrClosed)
	}
	if !d.Channel.IsZero() && (d.Incoming == nil || !d.Incoming.ImportChannel) {
		all := d.Local
		if d.Incoming == nil {
			// A client's delivery: its channel is recorded here whoever the
			// recipients are. One passed on is checked where it ends.
			for _, r := range d.Relays {
				all = append(all[:len(all):len(all)], r.Recipients...)
			}
		}
		if err := s.checkChannel(d.From, all, d.Channel); err != nil {
			return fail(err)
		}
	}
	ids := make([][]byte, len(d.Local))
	for i, r := range d.Local {
		ids[i] = Inbox{Recipient: r, Channel: d.Channel}.id()
	}
	qids := make([][]byte, len(d.Relays))
	items := make([][]byte, len(d.Relays))
	for i, r := range d.Relays {
		if len(r.Recipients) == 0 || len(r.Recipients) > MaxRelayRecipients || r.Domain == "" {
			return fail(errors.New("store: a relay needs a domain and 1 to 4096 recipients"))
		}
		qids[i] = relayQueueID(r.Domain)
		items[i] = RelayItem{Hops: r.Hops, From: d.From, Channel: d.Channel, Recipients: r.Recipients, Payload: d.Payload}.encode()
	}
	var out Delivered
	done := s.commits.submit(func(tx *bbolt.Tx) error {
		out = Delivered{} // fresh on every run of the batch
		if in := d.Incoming; in != nil {
			dup, err := s.markIncoming(tx, in)
			if err != nil || dup {
				out.Duplicate = dup
				return err
			}
			if err := s.applyIncoming(tx, in, d); err != nil {
				return err
			}
		}
		out.Local = make([]uint64, len(ids))
		for i, id := range ids {
			seq, err := push(tx, id, d.Payload, s.opts.MaxInboxDepth, ErrInboxFull)
			if err != nil {
				return err
			}
			out.Local[i] = seq
		}
		out.Relays = make([]uint64, len(qids))
		for i, id := range qids {
			seq, err := push(tx, id, items[i], s.opts.MaxRelayQueue, ErrRelayQueueFull)
			if err != nil {
				return err
			}
			out.Relays[i] = seq
		}
		return nil
	})
	return func() (Delivered, error) {
		if err := <-done; err != nil {
			return Delivered{}, err
		}
		if out.Duplicate {
			return out, nil
		}
		s.queued.Add(int64(len(ids)))
		for _, id := range ids {
			s.hub.notify(string(id))
		}
		for _, id := range qids {
			s.hub.notify(string(id))
		}
		return out, nil
	}
}

// markIncoming records in's seq as the last applied of its stream, or
// reports it as a duplicate.
func (s *Store) markIncoming(tx *bbolt.Tx, in *Incoming) (dup bool, err error) {
	bkt := tx.Bucket(bFedIn)
	k := fedinKey(in.Origin, in.Stream)
	if v := bkt.Get(k); v != nil {
		if len(v) != fedinLen || v[0] != recordV1 {
			return false, corrupt("relay mark", "length %d", len(v))
		}
		if in.Seq <= binary.BigEndian.Uint64(v[1:]) {
			return true, nil
		}
	}
	v := make([]byte, 0, fedinLen)
	v = append(v, recordV1)
	v = binary.BigEndian.AppendUint64(v, in.Seq)
	v = binary.BigEndian.AppendUint64(v, uint64(s.now().UnixNano()))
	return false, bkt.Put(k, v)
}

// applyIncoming does what an Incoming asks beside the delivery itself.
func (s *Store) applyIncoming(tx *bbolt.Tx, in *Incoming, d Delivery) error {
	if in.LearnSender && tx.Bucket(bIdents).Get(d.From[:]) == nil {
		rec := Remote{Domain: in.Origin, Updated: s.now()}.encode()
		if err := putIfAbsent(tx.Bucket(bRemotes), d.From[:], rec); err != nil {
			return err
		}
	}
	if !in.ImportChannel || d.Channel.IsZero() {
		return nil
	}
	if len(d.Local) != 1 {
		return ErrNotChannelMember
	}
	id, rec := s.channelRecord(d.From, d.Local[0])
	if id != d.Channel || d.From == d.Local[0] {
		return ErrNotChannelMember
	}
	return putIfAbsent(tx.Bucket(bChannels), id[:], rec)
}

// NextRelay returns the oldest delivery queued for domain's server, if
// any.
func (s *Store) NextRelay(domain string) (RelayItem, bool, error) {
	var it RelayItem
	var ok bool
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		scan(tx, relayQueueID(domain), func(seq uint64, data []byte) bool {
			it, err = decodeRelayItem(seq, data)
			ok = err == nil
			return false
		})
		return err
	})
	return it, ok, err
}

// RemoveRelay removes the delivery seq from domain's queue (it was
// delivered, or refused for good).
func (s *Store) RemoveRelay(domain string, seq uint64) error {
	id := relayQueueID(domain)
	return s.batch(func(tx *bbolt.Tx) error {
		if tx.Bucket(bItems).Get(itemKey(id, seq)) == nil {
			return nil // removed already: removing is idempotent
		}
		return remove(tx, id, []uint64{seq})
	})
}

// RelayQueued returns how many deliveries wait for domain's server.
func (s *Store) RelayQueued(domain string) (uint64, error) { return s.depth(relayQueueID(domain)) }

// WaitRelay is Wait for domain's queue: the channel receives after the
// next delivery for that server commits.
func (s *Store) WaitRelay(domain string) (<-chan struct{}, func()) {
	return s.hub.subscribe(string(relayQueueID(domain)))
}

// SweepIncoming deletes the de-duplication marks of streams not heard
// from since before, and returns how many it deleted. A stream ends when
// its server restarts; a mark outlives any retry of its stream's
// deliveries by far.
func (s *Store) SweepIncoming(before time.Time) (int, error) {
	var n int
	err := s.batch(func(tx *bbolt.Tx) error {
		n = 0
		bkt := tx.Bucket(bFedIn)
		var old [][]byte
		err := bkt.ForEach(func(k, v []byte) error {
			if len(v) == fedinLen && int64(binary.BigEndian.Uint64(v[9:])) < before.UnixNano() {
				old = append(old, bytes.Clone(k))
			}
			return nil
		})
		for _, k := range old {
			if err == nil {
				err = bkt.Delete(k)
			}
		}
		n = len(old)
		return err
	})
	return n, err
}
