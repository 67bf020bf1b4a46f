// Package outbox is a node's durable queue of messages waiting to reach
// their recipients. Enqueue returns only once an item is committed to
// disk; Run hands items to a Deliverer, retries failures with exponential
// backoff and jitter until they succeed, and removes an item only after its
// delivery succeeded, so nothing is lost across failures, restarts or
// crashes.
//
// Items for one recipient are delivered one at a time in enqueue order (an
// MLS commit must not overtake the one before it); different recipients are
// served in parallel, so an unreachable peer does not hold up the others.
// Delivery is at least once: a crash between a successful delivery and the
// removal of the item delivers it again after restart, and receivers
// de-duplicate (application messages by their payload id; MLS rejects a
// handshake message it has already applied).
//
// The outbox does not choose paths or seal anything: the Deliverer decides
// how to reach a recipient (open link, direct dial, home server), and
// reports which path took the item. The node stores MLS messages here and
// seals each for its recipient at delivery time, so that a state change
// and the messages announcing it commit in one transaction (EnqueueTx)
// before the recipients' hybrid keys are even known.
//
// # Storage
//
// One bbolt bucket, "outbox", in the node's database. Keys are
// recipient (32 bytes) || seq (8 bytes, big-endian), so a cursor Seek finds
// each recipient's oldest item; seq comes from the bucket's sequence and
// grows across restarts. Values:
//
//	offset size  field
//	0      1     format = 0x01
//	1      8     created, Unix nanoseconds (int64)
//	9      16    message id (all zero if the item is not an application message)
//	25     1     conversation length c, 0 ≤ c ≤ MaxConversationSize
//	26     c     conversation
//	26+c   n     data, 1 ≤ n ≤ MaxDataSize
package outbox

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/node/payload"
	"github.com/quicproquo/qpq/seal"
)

// Paths a Deliverer reports; they are the "via" of the node's events.
const (
	ViaDirect = "direct" // accepted by the recipient's own node
	ViaServer = "server" // stored durably by the recipient's home server
)

// Limits on what Enqueue accepts.
const (
	RecipientSize       = 32  // an Ed25519 identity key
	MaxConversationSize = 255 // a channel id or MLS group id
	// MaxDataSize bounds an item's data: a sealed envelope, or what
	// will be sealed into one.
	MaxDataSize = seal.MaxSealedSize
)

// Defaults for the zero Config.
const (
	DefaultMinBackoff     = 250 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultAttemptTimeout = 30 * time.Second
	DefaultMaxParallel    = 16
	DefaultWaitingAfter   = 2 * time.Second
)

var bucketName = []byte("outbox")

const formatV1 = 0x01

// Errors.
var (
	ErrInvalid = errors.New("outbox: invalid item")
	ErrRunning = errors.New("outbox: already running")
	ErrCorrupt = errors.New("outbox: stored item is corrupt")
	// ErrNoAnswerYet is what OnWaiting is told of an attempt that has
	// run for WaitingAfter and not ended yet.
	ErrNoAnswerYet = errors.New("no answer yet; still trying")
)

// Item is one sealed message for one recipient.
type Item struct {
	// Seq orders all items; Enqueue assigns it.
	Seq uint64
	// Recipient is the recipient's 32-byte identity key.
	Recipient [RecipientSize]byte
	// Conversation is the channel or MLS group id the item belongs to (the
	// channelId of the home server's enqueue), at most MaxConversationSize
	// bytes.
	Conversation []byte
	// MessageID is the payload id of an application message, and zero for
	// MLS handshake messages (commits, welcomes), which have none.
	MessageID payload.ID
	// Data is what the Deliverer hands over (or seals first), 1 to
	// MaxDataSize bytes.
	Data []byte
	// Created is when the message was made; Enqueue sets it to the current
	// time if it is zero.
	Created time.Time
}

// Deliverer hands one item to its recipient.
//
// Deliver returns the path that took the item (ViaDirect or ViaServer) once
// the recipient's node accepted it or its home server stored it durably, or
// an error; wrap an error with Permanent when retrying cannot help (the item
// is then dropped and reported). It must return promptly when ctx ends. The
// outbox calls it for at most one item per recipient at a time, and for
// different recipients concurrently.
type Deliverer interface {
	Deliver(ctx context.Context, it Item) (via string, err error)
}

// DeliverFunc adapts a function to Deliverer.
type DeliverFunc func(ctx context.Context, it Item) (string, error)

// Deliver calls f.
func (f DeliverFunc) Deliver(ctx context.Context, it Item) (string, error) { return f(ctx, it) }

var _ Deliverer = DeliverFunc(nil)

// Permanent marks err as not worth retrying.
func Permanent(err error) error { return &permanentError{err} }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Result is the final outcome of one item: delivered (Err nil, Via set) or
// dropped after a permanent error (Err set). The item is no longer in the
// outbox when its Result is reported.
type Result struct {
	Item     Item
	Via      string
	Err      error
	Attempts int // delivery attempts in this run of the outbox
}

// Config tunes an Outbox. The zero value means the documented defaults.
type Config struct {
	// MinBackoff is the wait after the first failed attempt; it doubles
	// with each further failure up to MaxBackoff. The wait is jittered to
	// between half and all of it. Defaults: DefaultMinBackoff,
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one Deliver call (DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	// MaxParallel bounds concurrent Deliver calls (DefaultMaxParallel).
	MaxParallel int
	// OnResult, if set, receives every final outcome: for one recipient
	// in order, from the goroutine delivering to it. It must not block
	// for long, and must not call Run.
	OnResult func(Result)
	// OnWaiting, if set, is told once per item and run of the outbox that
	// the item is stuck: an attempt failed (err, retryable) and the item
	// has waited for at least WaitingAfter (DefaultWaitingAfter) in this
	// run (since it was made, or since Run began), so a failure
	// that the next quick retry cures goes unreported; or an attempt has
	// run for WaitingAfter and goes on (err is ErrNoAnswerYet). Only the
	// item at the head of its recipient's queue is attempted, so only it
	// is reported; the items behind it wait too. Called like OnResult.
	OnWaiting    func(it Item, err error)
	WaitingAfter time.Duration
	// Logger receives failed attempts at debug level and storage errors
	// at error level (never message content). Default: discard.
	Logger *slog.Logger
}

// Outbox is a durable outbox on a bbolt database. Its methods are safe for
// concurrent use.
type Outbox struct {
	db      *bolt.DB
	deliver Deliverer
	cfg     Config
	log     *slog.Logger
	sem     chan struct{} // MaxParallel tokens

	mu      sync.Mutex // guards the fields below
	ctx     context.Context
	started time.Time // when Run began
	running bool
	workers map[[RecipientSize]byte]*worker
	wg      sync.WaitGroup // workers; Add only under mu while running
}

type worker struct {
	kick chan struct{} // capacity 1: "retry now"
}

// New returns an outbox that keeps its items in db (creating its bucket)
// and delivers them with d once Run is called. db must not be opened with
// NoSync: durability rests on bbolt's fsync at commit.
func New(db *bolt.DB, d Deliverer, cfg Config) (*Outbox, error) {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.MaxParallel <= 0 {
		cfg.MaxParallel = DefaultMaxParallel
	}
	if cfg.WaitingAfter <= 0 {
		cfg.WaitingAfter = DefaultWaitingAfter
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: create bucket: %w", err)
	}
	return &Outbox{
		db:      db,
		deliver: d,
		cfg:     cfg,
		log:     log.With("component", "outbox"),
		sem:     make(chan struct{}, cfg.MaxParallel),
		workers: make(map[[RecipientSize]byte]*worker),
	}, nil
}

// Enqueue stores it durably and returns it with Seq (and Created, if it was
// zero) set. When Enqueue returns nil the item is on disk and will be
// delivered. If the outbox is running, delivery starts at once.
func (o *Outbox) Enqueue(it Item) (Item, error) {
	var out []Item
	err := o.db.Update(func(tx *bolt.Tx) error {
		var err error
		out, err = o.EnqueueTx(tx, it)
		return err
	})
	if err != nil {
		return Item{}, err
	}
	return out[0], nil
}

// EnqueueTx stores items in tx, the caller's read-write transaction, so
// that they commit together with whatever else tx changes (a new group
// state and the commit that announces it, say). It returns the items with
// Seq and Created set. Delivery starts when tx commits; if tx rolls back,
// nothing was enqueued.
func (o *Outbox) EnqueueTx(tx *bolt.Tx, items ...Item) ([]Item, error) {
	out := make([]Item, 0, len(items))
	now := time.Now()
	for _, it := range items {
		if err := check(it); err != nil {
			return nil, err
		}
		it.Conversation = bytes.Clone(it.Conversation)
		it.Data = bytes.Clone(it.Data)
		if it.Created.IsZero() {
			it.Created = now
		}
		it.Created = it.Created.Round(0) // as stored: no monotonic reading
		b := tx.Bucket(bucketName)
		seq, err := b.NextSequence()
		if err != nil {
			return nil, fmt.Errorf("outbox: enqueue: %w", err)
		}
		it.Seq = seq
		if err := b.Put(itemKey(it.Recipient, seq), encodeItem(it)); err != nil {
			return nil, fmt.Errorf("outbox: enqueue: %w", err)
		}
		out = append(out, it)
	}
	tx.OnCommit(func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.running {
			for _, it := range out {
				o.startLocked(it.Recipient)
			}
		}
	})
	return out, nil
}

func check(it Item) error {
	switch {
	case it.Recipient == [RecipientSize]byte{}:
		return fmt.Errorf("%w: no recipient", ErrInvalid)
	case len(it.Conversation) > MaxConversationSize:
		return fmt.Errorf("%w: conversation id of %d bytes, limit %d",
			ErrInvalid, len(it.Conversation), MaxConversationSize)
	case len(it.Data) == 0:
		return fmt.Errorf("%w: no data", ErrInvalid)
	case len(it.Data) > MaxDataSize:
		return fmt.Errorf("%w: data of %d bytes, limit %d", ErrInvalid, len(it.Data), MaxDataSize)
	}
	return nil
}

// Kick makes the delivery to recipient retry now instead of at the end of
// its backoff, e.g. when a link to that peer comes up. It does nothing if
// nothing is waiting for recipient.
func (o *Outbox) Kick(recipient [RecipientSize]byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if w := o.workers[recipient]; w != nil {
		w.signal()
	}
}

// KickAll makes every waiting delivery retry now, e.g. when the connection
// to the home server comes back.
func (o *Outbox) KickAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range o.workers {
		w.signal()
	}
}

func (w *worker) signal() {
	select {
	case w.kick <- struct{}{}:
	default: // a retry is already due
	}
}

// Run delivers the stored items and those enqueued later until ctx ends,
// then waits for its deliveries to return and returns ctx.Err(). Only one
// Run may be active at a time; it may be called again after it returned.
func (o *Outbox) Run(ctx context.Context) error {
	o.mu.Lock()
	if o.running {
		o.mu.Unlock()
		return ErrRunning
	}
	o.running, o.ctx, o.started = true, ctx, time.Now()
	o.mu.Unlock()

	recipients, err := o.recipients()
	o.mu.Lock()
	for _, r := range recipients {
		o.startLocked(r)
	}
	o.mu.Unlock()
	if err != nil {
		// Items that could not be listed are found again on the next
		// Enqueue for their recipient or the next Run.
		o.log.Error("list pending items", "err", err)
	}

	<-ctx.Done()
	o.mu.Lock()
	o.running, o.ctx = false, nil
	o.mu.Unlock()
	o.wg.Wait()
	return ctx.Err()
}

// startLocked starts the worker for r unless one is running.
func (o *Outbox) startLocked(r [RecipientSize]byte) {
	if o.workers[r] != nil {
		return
	}
	w := &worker{kick: make(chan struct{}, 1)}
	o.workers[r] = w
	o.wg.Add(1)
	go func(ctx context.Context, started time.Time) {
		defer o.wg.Done()
		o.work(ctx, r, w, started)
	}(o.ctx, o.started)
}

// work delivers r's items in order until none is left or ctx ends.
// started is when Run began: an item counts as waiting from then at the
// earliest, so that a node starting with items left from its last run
// does not report them before it had a chance to connect.
func (o *Outbox) work(ctx context.Context, r [RecipientSize]byte, w *worker, started time.Time) {
	defer func() {
		o.mu.Lock()
		if o.workers[r] == w {
			delete(o.workers, r)
		}
		o.mu.Unlock()
	}()
	attempts := 0
	var told uint64 // seq of the item OnWaiting was told of (seqs start at 1)
	tell := func(it Item, err error) {
		if o.cfg.OnWaiting != nil && told != it.Seq {
			told = it.Seq
			o.cfg.OnWaiting(it, err)
		}
	}
	for ctx.Err() == nil {
		it, ok, err := o.head(r)
		if err != nil {
			o.log.Error("read pending item", "err", err)
			attempts++
			if !o.wait(ctx, w, attempts) {
				return
			}
			continue
		}
		if !ok {
			if o.retire(r, w) {
				return
			}
			continue
		}
		var onSlow func(Item, error) // told of the attempt if it runs long
		if o.cfg.OnWaiting != nil && told != it.Seq {
			onSlow = tell
		}
		via, err := o.try(ctx, it, onSlow)
		attempts++
		if err != nil && !IsPermanent(err) {
			if ctx.Err() != nil {
				return
			}
			o.log.Debug("delivery failed; will retry", "seq", it.Seq, "attempt", attempts, "err", err)
			if time.Since(latest(it.Created, started)) >= o.cfg.WaitingAfter {
				tell(it, err)
			}
			if !o.wait(ctx, w, attempts) {
				return
			}
			continue
		}
		if rmErr := o.remove(it); rmErr != nil {
			// Delivered but still stored: it goes out again (at least
			// once), which receivers tolerate.
			o.log.Error("remove delivered item", "seq", it.Seq, "err", rmErr)
			if !o.wait(ctx, w, attempts) {
				return
			}
			continue
		}
		if o.cfg.OnResult != nil {
			o.cfg.OnResult(Result{Item: it, Via: via, Err: err, Attempts: attempts})
		}
		attempts = 0
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// try makes one attempt at it. If onSlow is not nil and the attempt runs
// for WaitingAfter, onSlow is called then with ErrNoAnswerYet, from this
// goroutine (the worker's, as for failures).
func (o *Outbox) try(ctx context.Context, it Item, onSlow func(Item, error)) (string, error) {
	if onSlow == nil {
		return o.attempt(ctx, it)
	}
	type outcome struct {
		via string
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		via, err := o.attempt(ctx, it)
		done <- outcome{via, err}
	}()
	slow := time.NewTimer(o.cfg.WaitingAfter)
	defer slow.Stop()
	select {
	case r := <-done:
		return r.via, r.err
	case <-slow.C:
		onSlow(it, ErrNoAnswerYet)
		r := <-done
		return r.via, r.err
	}
}

// attempt makes one bounded Deliver call, within the parallelism limit.
func (o *Outbox) attempt(ctx context.Context, it Item) (string, error) {
	select {
	case o.sem <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-o.sem }()
	actx, cancel := context.WithTimeout(ctx, o.cfg.AttemptTimeout)
	defer cancel()
	return o.deliver.Deliver(actx, it)
}

// wait sleeps the backoff for the given number of failed attempts, or until
// a kick. It reports false when ctx ended.
func (o *Outbox) wait(ctx context.Context, w *worker, attempts int) bool {
	t := time.NewTimer(o.backoff(attempts))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-w.kick:
		return true
	case <-t.C:
		return true
	}
}

// backoff is MinBackoff·2^(n-1), capped at MaxBackoff, jittered uniformly
// into its upper half so that peers retrying after one outage spread out.
func (o *Outbox) backoff(n int) time.Duration {
	d := o.cfg.MaxBackoff
	if n < 32 {
		d = min(o.cfg.MinBackoff<<(n-1), o.cfg.MaxBackoff)
	}
	if d <= 0 { // shift overflow
		d = o.cfg.MaxBackoff
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// retire removes w as r's worker if r has no items left, under mu so that a
// concurrent Enqueue either sees w (and w sees its item) or starts a new
// worker. It reports whether w should exit.
func (o *Outbox) retire(r [RecipientSize]byte, w *worker) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok, err := o.head(r); ok || err != nil {
		return false
	}
	if o.workers[r] == w {
		delete(o.workers, r)
	}
	return true
}

// head returns r's oldest item.
func (o *Outbox) head(r [RecipientSize]byte) (it Item, ok bool, err error) {
	err = o.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketName).Cursor().Seek(r[:])
		if k == nil || !bytes.HasPrefix(k, r[:]) {
			return nil
		}
		it, err = decodeItem(k, v)
		ok = err == nil
		return err
	})
	return it, ok, err
}

// remove deletes a delivered item.
func (o *Outbox) remove(it Item) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketName).Delete(itemKey(it.Recipient, it.Seq))
	})
}

// recipients lists every recipient with at least one item.
func (o *Outbox) recipients() ([][RecipientSize]byte, error) {
	var out [][RecipientSize]byte
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketName).Cursor()
		for k, _ := c.First(); k != nil; {
			if len(k) != RecipientSize+8 {
				return fmt.Errorf("%w: key of %d bytes", ErrCorrupt, len(k))
			}
			var r [RecipientSize]byte
			copy(r[:], k)
			out = append(out, r)
			// Skip the rest of r's items: seq never reaches 2^64-1.
			k, _ = c.Seek(itemKey(r, ^uint64(0)))
		}
		return nil
	})
	return out, err
}

// Pending returns every stored item, in enqueue order.
func (o *Outbox) Pending() ([]Item, error) {
	var out []Item
	err := o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketName).ForEach(func(k, v []byte) error {
			it, err := decodeItem(k, v)
			if err != nil {
				return err
			}
			out = append(out, it)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	slices.SortFunc(out, func(a, b Item) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

// Undelivered returns the application messages of conversation that are
// still stored, each with the recipients it has not reached yet (ordered
// by identity key).
func (o *Outbox) Undelivered(conversation []byte) (map[payload.ID][][RecipientSize]byte, error) {
	out := map[payload.ID][][RecipientSize]byte{}
	err := o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketName).ForEach(func(k, v []byte) error {
			it, _, err := decodeHeader(k, v)
			if err != nil {
				return err
			}
			if !it.MessageID.IsZero() && bytes.Equal(it.Conversation, conversation) {
				out[it.MessageID] = append(out[it.MessageID], it.Recipient)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return out, nil
}

func itemKey(r [RecipientSize]byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, RecipientSize+8), r[:]...), seq)
}

const valueHeaderSize = 1 + 8 + payload.IDSize + 1

func encodeItem(it Item) []byte {
	v := make([]byte, 0, valueHeaderSize+len(it.Conversation)+len(it.Data))
	v = append(v, formatV1)
	v = binary.BigEndian.AppendUint64(v, uint64(it.Created.UnixNano()))
	v = append(v, it.MessageID[:]...)
	v = append(v, byte(len(it.Conversation)))
	v = append(v, it.Conversation...)
	return append(v, it.Data...)
}

// decodeItem decodes a stored item, copying out of bbolt's memory.
func decodeItem(k, v []byte) (Item, error) {
	it, data, err := decodeHeader(k, v)
	if err != nil {
		return it, err
	}
	it.Conversation = bytes.Clone(it.Conversation)
	it.Data = bytes.Clone(data)
	return it, nil
}

// decodeHeader decodes all of a stored item but its data, which it
// returns apart; Conversation and the data point into v.
func decodeHeader(k, v []byte) (it Item, data []byte, err error) {
	if len(k) != RecipientSize+8 {
		return it, nil, fmt.Errorf("%w: key of %d bytes", ErrCorrupt, len(k))
	}
	if len(v) < valueHeaderSize || v[0] != formatV1 {
		return it, nil, fmt.Errorf("%w: bad header", ErrCorrupt)
	}
	copy(it.Recipient[:], k)
	it.Seq = binary.BigEndian.Uint64(k[RecipientSize:])
	it.Created = time.Unix(0, int64(binary.BigEndian.Uint64(v[1:])))
	copy(it.MessageID[:], v[9:])
	c := int(v[valueHeaderSize-1])
	rest := v[valueHeaderSize:]
	if len(rest) < c+1 || len(rest)-c > MaxDataSize {
		return it, nil, fmt.Errorf("%w: bad lengths", ErrCorrupt)
	}
	it.Conversation = rest[:c:c]
	return it, rest[c:], nil
}
