package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	bbolterrors "go.etcd.io/bbolt/errors"

	"github.com/quicproquo/qpq/internal/boltcheck"
)

// FileName is the name of the database file inside a data directory.
const FileName = "qpq.db"

// KeySize is the length of an identity key (Ed25519 public key).
const KeySize = 32

// Key is an identity key.
type Key [KeySize]byte

// ChannelID is a 16-byte 1:1 channel id (internal/chanid). The zero value
// names no channel: the default inbox.
type ChannelID [16]byte

// IsZero reports whether c is the default inbox's (absent) channel.
func (c ChannelID) IsZero() bool { return c == ChannelID{} }

// Defaults of Options' zero values.
const (
	DefaultMaxInboxDepth  = 100_000
	DefaultMaxKeyPackages = 1_000
	DefaultMaxSessions    = 64
	DefaultBatchSize      = 1024
)

// Options tune a Store. The zero value means the documented defaults.
type Options struct {
	// MaxInboxDepth caps the messages queued in one inbox; an enqueue
	// beyond it fails with ErrInboxFull. 0 means DefaultMaxInboxDepth.
	MaxInboxDepth int
	// MaxKeyPackages caps the key packages stored per identity; 0 means
	// DefaultMaxKeyPackages.
	MaxKeyPackages int
	// MaxSessions caps the live session tokens per identity; the oldest
	// is dropped when a login goes beyond it. 0 means DefaultMaxSessions.
	MaxSessions int
	// BatchSize caps the writes that share one commit. 0 means
	// DefaultBatchSize.
	BatchSize int
	// MaxRelayQueue caps the deliveries queued for one other server; a
	// delivery beyond it fails with ErrRelayQueueFull. 0 means
	// DefaultMaxRelayQueue.
	MaxRelayQueue int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.MaxInboxDepth <= 0 {
		o.MaxInboxDepth = DefaultMaxInboxDepth
	}
	if o.MaxKeyPackages <= 0 {
		o.MaxKeyPackages = DefaultMaxKeyPackages
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.MaxRelayQueue <= 0 {
		o.MaxRelayQueue = DefaultMaxRelayQueue
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Outcomes callers branch on.
var (
	ErrInboxFull          = errors.New("store: inbox is full")
	ErrTooManyKeyPackages = errors.New("store: too many key packages for this identity")
	ErrChannelNotFound    = errors.New("store: no such channel")
	ErrNotChannelMember   = errors.New("store: sender and recipient are not the channel's members")
	ErrUsernameTaken      = errors.New("store: username is taken")
	ErrIdentityTaken      = errors.New("store: identity key is registered to another user")
	ErrSameIdentity       = errors.New("store: a channel needs two different identities")
	ErrClosed             = errors.New("store: closed")
)

// Bucket names (see the package doc for their layout).
var (
	bQueues     = []byte("queues")
	bItems      = []byte("items")
	bChannels   = []byte("channels")
	bUsers      = []byte("users")
	bIdents     = []byte("idents")
	bHybrid     = []byte("hkeys")
	bTokens     = []byte("tokens")
	bSessions   = []byte("sessions")
	bEndpoints  = []byte("endpoints")
	bRemotes    = []byte("remotes")
	bFedIn      = []byte("fedin")
	bLastResort = []byte("lastkp")
	bMeta       = []byte("meta")

	bucketNames = [][]byte{bQueues, bItems, bChannels, bUsers, bIdents, bHybrid, bTokens, bSessions, bEndpoints, bRemotes, bFedIn, bLastResort, bMeta}
)

// Keys in the meta bucket.
var (
	metaLayout    = []byte("layout")
	layoutVersion = []byte{1}
	secretPrefix  = []byte("secret/")
)

// Store is the bbolt-backed state. Its methods are safe for concurrent use.
type Store struct {
	db      *bbolt.DB
	commits *committer
	opts    Options
	hub     hub
	queued  atomic.Int64 // messages in all inboxes, for the queue-depth gauge
	closed  atomic.Bool

	tokenEpoch atomic.Uint64 // see TokenEpoch
}

// CommitStats reports the group commit's totals since Open.
func (s *Store) CommitStats() CommitStats { return s.commits.stats() }

// ErrInUse is returned by Open when another process has the database open.
var ErrInUse = errors.New("store: the database is open in another process")

// Open opens (creating if needed) the database file FileName in dir.
func Open(dir string, opts Options) (*Store, error) {
	opts.setDefaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	path := filepath.Join(dir, FileName)
	// bbolt trusts its pages: a damaged file would panic in Open or in
	// whichever call first reads the bad page.
	switch err := boltcheck.File(path); {
	case errors.Is(err, boltcheck.ErrDamaged):
		return nil, fmt.Errorf("store: %s: %w (restore a backup made with qpq backup, or move the file away to start empty)", path, err)
	case errors.Is(err, boltcheck.ErrLocked):
		return nil, fmt.Errorf("%w: %s", ErrInUse, path)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: time.Second, // another process holding the file lock
		// The freelist is rebuilt from the pages on open instead of being
		// written on every commit: less I/O per commit, same durability.
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	if errors.Is(err, bbolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrInUse, path)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{db: db, opts: opts}
	s.hub.init()
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	s.commits = newCommitter(db, opts.BatchSize)
	return s, nil
}

func (s *Store) init() error {
	var queued int64
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range bucketNames {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		switch v := meta.Get(metaLayout); {
		case v == nil:
			if err := meta.Put(metaLayout, layoutVersion); err != nil {
				return err
			}
		case !bytes.Equal(v, layoutVersion):
			return fmt.Errorf("store: data layout version %v is not supported by this build (want %v)", v, layoutVersion)
		}
		return tx.Bucket(bQueues).ForEach(func(k, v []byte) error {
			if len(k) > 0 && isInboxID(k) {
				st, err := decodeQueueState(v)
				if err != nil {
					return err
				}
				queued += int64(st.depth)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("store: init: %w", err)
	}
	s.queued.Store(queued)
	return nil
}

// Close closes the database. It is idempotent.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.commits.close()
	return s.db.Close()
}

// Queued returns the number of messages waiting in all inboxes.
func (s *Store) Queued() int64 { return s.queued.Load() }

func (s *Store) now() time.Time { return s.opts.Now() }

// batch runs fn in a group commit and returns once it is on disk. fn may
// run more than once (see committer) and must assign its results afresh
// on every run.
func (s *Store) batch(fn func(*bbolt.Tx) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.commits.do(fn)
}

func (s *Store) view(fn func(*bbolt.Tx) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.db.View(fn)
}

// Secret returns the named server secret, creating it with generate (and
// committing it) on first use. Used for the OPAQUE key material.
func (s *Store) Secret(name string, generate func() ([]byte, error)) ([]byte, error) {
	key := append(append([]byte(nil), secretPrefix...), name...)
	var out []byte
	err := s.view(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bMeta).Get(key); v != nil {
			out = bytes.Clone(v)
		}
		return nil
	})
	if err != nil || out != nil {
		return out, err
	}
	fresh, err := generate()
	if err != nil {
		return nil, err
	}
	if len(fresh) == 0 {
		return nil, errors.New("store: secret generator returned nothing")
	}
	// Another caller may have created it meanwhile: keep the first.
	err = s.db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if v := meta.Get(key); v != nil {
			out = bytes.Clone(v)
			return nil
		}
		out = fresh
		return meta.Put(key, fresh)
	})
	return out, err
}
