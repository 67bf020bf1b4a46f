// Package names is a node's address book: which identity key a username
// stands for, learned from mDNS, the home server (resolveUser) or the peer
// itself (resolveIdentity over the P2P link), kept in the node's bbolt
// file.
//
// The first binding of a name wins: none of those sources is authenticated
// for names (an mDNS record is a hint; a home server speaks for its own
// users only), so a name that later claims another identity is refused
// with ErrConflict and the caller tells the user, rather than silently
// sending a DM meant for bob to whoever announces "bob" next. An identity
// whose user changes their name is rebound to the new name; the old name
// keeps pointing to it.
//
// The book keeps at most MaxNames names; once full, a new name is refused
// with ErrFull (names already bound keep answering).
//
// # Storage
//
// Bucket "node.names":
//
//	"n" || name      → identity key (32 bytes)
//	"i" || identity  → name
package names

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// MaxNameSize bounds a username, in bytes (the mDNS TXT limit of
// p2p/mdns; home servers allow 64).
const MaxNameSize = 240

var bucketName = []byte("node.names")

// MaxNames bounds the names a book keeps. Names come from unauthenticated
// sources (anyone on a LAN can announce names by the thousand), so a book
// must not grow without end: at ≈ 300 bytes a name this is ≈ 30 MB.
const MaxNames = 100_000

// Errors.
var (
	// ErrFull: the book holds MaxNames names; a new one is not kept.
	ErrFull = errors.New("names: address book full")
	// ErrConflict: the name is bound to another identity already.
	ErrConflict = errors.New("names: name is bound to another identity")
	// ErrInvalid: not a usable name or identity key.
	ErrInvalid = errors.New("names: invalid name")
)

// Book is the address book. Its methods are safe for concurrent use.
type Book struct {
	db    *bolt.DB
	max   int64        // MaxNames, but for tests
	names atomic.Int64 // names bound, counted at New
}

// New returns the book kept in db, creating its bucket.
func New(db *bolt.DB) (*Book, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("names: create bucket: %w", err)
	}
	b := &Book{db: db, max: MaxNames}
	db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketName).Cursor()
		n := int64(0)
		for k, _ := c.Seek([]byte{'n'}); len(k) > 0 && k[0] == 'n'; k, _ = c.Next() {
			n++
		}
		b.names.Store(n)
		return nil
	})
	return b, nil
}

// Check reports whether name is a usable username: 1 to MaxNameSize bytes
// of printable UTF-8 without leading or trailing space, not starting with
// "/" (which the REPL reads as a command).
func Check(name string) error {
	switch {
	case name == "" || len(name) > MaxNameSize:
		return fmt.Errorf("%w: want 1 to %d bytes", ErrInvalid, MaxNameSize)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not UTF-8", ErrInvalid)
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("%w: leading or trailing space", ErrInvalid)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("%w: starts with /", ErrInvalid)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: unprintable character %U", ErrInvalid, r)
		}
	}
	return nil
}

// Bind records that name is identity's. It returns ErrConflict (and
// changes nothing) if name is bound to another identity.
func (b *Book) Bind(name string, identity ed25519.PublicKey) error {
	if err := Check(name); err != nil {
		return err
	}
	if len(identity) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: identity key of %d bytes", ErrInvalid, len(identity))
	}
	// mDNS repeats every peer's name with each announcement: a binding
	// that holds already costs a read, not a commit.
	if id, ok := b.Identity(name); ok && bytes.Equal(id, identity) {
		if cur, _ := b.Name(identity); cur == name {
			return nil
		}
	}
	added := false
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketName)
		nk := append([]byte{'n'}, name...)
		added = false
		if cur := bk.Get(nk); cur != nil {
			if !bytes.Equal(cur, identity) {
				return fmt.Errorf("%w: %q is %x…, not %x…", ErrConflict, name, cur[:4], identity[:4])
			}
		} else {
			if b.names.Load() >= b.max {
				return fmt.Errorf("%w: %d names", ErrFull, b.max)
			}
			if err := bk.Put(nk, identity); err != nil {
				return err
			}
			added = true
		}
		ik := append([]byte{'i'}, identity...)
		if string(bk.Get(ik)) == name {
			return nil
		}
		return bk.Put(ik, []byte(name))
	})
	if err == nil && added {
		b.names.Add(1)
	}
	return err
}

// Identity returns the identity bound to name.
func (b *Book) Identity(name string) (ed25519.PublicKey, bool) {
	var id ed25519.PublicKey
	b.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketName).Get(append([]byte{'n'}, name...)); len(v) == ed25519.PublicKeySize {
			id = bytes.Clone(v)
		}
		return nil
	})
	return id, id != nil
}

// Name returns the name identity was last bound to.
func (b *Book) Name(identity []byte) (string, bool) {
	var name string
	var ok bool
	b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketName).Get(append([]byte{'i'}, identity...))
		name, ok = string(v), v != nil
		return nil
	})
	return name, ok
}
