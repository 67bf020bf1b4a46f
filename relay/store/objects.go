package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/internal/chanid"
)

// CreateChannel returns the 1:1 channel of a and b (chanid.Derive) and
// whether this call created it. Of any number of concurrent calls for the
// same pair exactly one gets created = true: the check and the insert
// share one write transaction.
func (s *Store) CreateChannel(a, b Key) (ChannelID, bool, error) {
	if a == b {
		return ChannelID{}, false, ErrSameIdentity
	}
	id := ChannelID(chanid.Derive(a[:], b[:]))
	lo, hi := a, b
	if bytes.Compare(lo[:], hi[:]) > 0 {
		lo, hi = hi, lo
	}
	rec := Channel{Lo: lo, Hi: hi, Created: s.now()}.encode()
	var created bool
	err := s.batch(func(tx *bbolt.Tx) error {
		bkt := tx.Bucket(bChannels)
		created = bkt.Get(id[:]) == nil
		if !created {
			return nil
		}
		return bkt.Put(id[:], rec)
	})
	if err != nil {
		return ChannelID{}, false, err
	}
	return id, created, nil
}

// Channel returns the channel with the given id, if it exists.
func (s *Store) Channel(id ChannelID) (Channel, bool, error) {
	var ch Channel
	var ok bool
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bChannels).Get(id[:])
		if v == nil {
			return nil
		}
		var err error
		ch, err = decodeChannel(v)
		ok = err == nil
		return err
	})
	return ch, ok, err
}

// PutHybridKey stores identity's hybrid public key, replacing any older one.
func (s *Store) PutHybridKey(identity Key, pub []byte) error {
	return s.batch(func(tx *bbolt.Tx) error {
		return tx.Bucket(bHybrid).Put(identity[:], pub)
	})
}

// HybridKeys returns the hybrid public keys of the identities in order,
// nil for an identity with none.
func (s *Store) HybridKeys(identities ...Key) ([][]byte, error) {
	out := make([][]byte, len(identities))
	err := s.view(func(tx *bbolt.Tx) error {
		bkt := tx.Bucket(bHybrid)
		for i, id := range identities {
			if v := bkt.Get(id[:]); v != nil {
				out[i] = bytes.Clone(v)
			}
		}
		return nil
	})
	return out, err
}

// CreateUser registers username with its identity key and OPAQUE record.
// It fails with ErrUsernameTaken or ErrIdentityTaken, atomically.
func (s *Store) CreateUser(username string, u User) error {
	if len(u.Record) > MaxRecordSize {
		return fmt.Errorf("store: OPAQUE record of %d bytes is above %d", len(u.Record), MaxRecordSize)
	}
	if u.Created.IsZero() {
		u.Created = s.now()
	}
	rec := u.encode()
	return s.batch(func(tx *bbolt.Tx) error {
		users, idents := tx.Bucket(bUsers), tx.Bucket(bIdents)
		if users.Get([]byte(username)) != nil {
			return ErrUsernameTaken
		}
		if idents.Get(u.Identity[:]) != nil {
			return ErrIdentityTaken
		}
		if err := users.Put([]byte(username), rec); err != nil {
			return err
		}
		return idents.Put(u.Identity[:], []byte(username))
	})
}

// User returns the account registered under username, if any.
func (s *Store) User(username string) (User, bool, error) {
	var u User
	var ok bool
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bUsers).Get([]byte(username))
		if v == nil {
			return nil
		}
		var err error
		u, err = decodeUser(v)
		ok = err == nil
		return err
	})
	return u, ok, err
}

// Username returns the username registered with identity, if any.
func (s *Store) Username(identity Key) (string, bool, error) {
	var name string
	var ok bool
	err := s.view(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bIdents).Get(identity[:]); v != nil {
			name, ok = string(v), true
		}
		return nil
	})
	return name, ok, err
}

func sessionKey(identity Key, expiry time.Time, selector [SelectorSize]byte) []byte {
	b := make([]byte, 0, KeySize+8+SelectorSize)
	b = append(b, identity[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(expiry.UnixNano()))
	return append(b, selector[:]...)
}

// PutToken stores a session token under its selector. When the identity
// then has more than MaxSessions live tokens, the ones expiring first are
// deleted.
func (s *Store) PutToken(selector [SelectorSize]byte, t Token) error {
	rec := t.encode()
	evicted := false
	err := s.batch(func(tx *bbolt.Tx) error {
		evicted = false
		tokens, sessions := tx.Bucket(bTokens), tx.Bucket(bSessions)
		if err := tokens.Put(selector[:], rec); err != nil {
			return err
		}
		if err := sessions.Put(sessionKey(t.Identity, t.Expiry, selector), nil); err != nil {
			return err
		}
		var keys [][]byte
		c := sessions.Cursor()
		for k, _ := c.Seek(t.Identity[:]); k != nil && bytes.HasPrefix(k, t.Identity[:]); k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys[:max(0, len(keys)-s.opts.MaxSessions)] {
			if err := tokens.Delete(k[KeySize+8:]); err != nil {
				return err
			}
			if err := sessions.Delete(k); err != nil {
				return err
			}
			evicted = true
		}
		return nil
	})
	if err == nil && evicted {
		s.tokenEpoch.Add(1)
	}
	return err
}

// TokenEpoch changes whenever a token is deleted (evicted by PutToken,
// or expired and swept), before the call that deleted it returns. A cache
// of authenticated tokens reads the epoch before it looks a token up and
// trusts its entry only while the epoch is unchanged.
func (s *Store) TokenEpoch() uint64 { return s.tokenEpoch.Load() }

// Token returns the token stored under selector, if any. Expiry is the
// caller's to check.
func (s *Store) Token(selector [SelectorSize]byte) (Token, bool, error) {
	var t Token
	var ok bool
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bTokens).Get(selector[:])
		if v == nil {
			return nil
		}
		var err error
		t, err = decodeToken(v)
		ok = err == nil
		return err
	})
	return t, ok, err
}

// DeleteExpiredTokens removes every token that expired before now and
// returns how many it removed.
func (s *Store) DeleteExpiredTokens(now time.Time) (int, error) {
	collect := func(tx *bbolt.Tx) ([][]byte, error) {
		var dead [][]byte
		err := tx.Bucket(bTokens).ForEach(func(k, v []byte) error {
			t, err := decodeToken(v)
			if err != nil {
				return err
			}
			if !t.Expiry.After(now) {
				var sel [SelectorSize]byte
				copy(sel[:], k)
				dead = append(dead, sessionKey(t.Identity, t.Expiry, sel))
			}
			return nil
		})
		return dead, err
	}
	var n int
	if err := s.view(func(tx *bbolt.Tx) error {
		dead, err := collect(tx)
		n = len(dead)
		return err
	}); err != nil || n == 0 {
		return 0, err
	}
	err := s.batch(func(tx *bbolt.Tx) error {
		dead, err := collect(tx)
		if err != nil {
			return err
		}
		n = len(dead)
		for _, k := range dead {
			if err := tx.Bucket(bTokens).Delete(k[KeySize+8:]); err != nil {
				return err
			}
			if err := tx.Bucket(bSessions).Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && n > 0 {
		s.tokenEpoch.Add(1)
	}
	return n, err
}

// PutEndpoint stores identity's published endpoint with its time.
func (s *Store) PutEndpoint(identity Key, e Endpoint) error {
	if len(e.NodeAddr) > MaxEndpointSize {
		return fmt.Errorf("store: endpoint of %d bytes is above %d", len(e.NodeAddr), MaxEndpointSize)
	}
	rec := e.encode()
	return s.batch(func(tx *bbolt.Tx) error {
		return tx.Bucket(bEndpoints).Put(identity[:], rec)
	})
}

// Endpoint returns identity's published endpoint, if any.
func (s *Store) Endpoint(identity Key) (Endpoint, bool, error) {
	var e Endpoint
	var ok bool
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bEndpoints).Get(identity[:])
		if v == nil {
			return nil
		}
		var err error
		e, err = decodeEndpoint(v)
		ok = err == nil
		return err
	})
	return e, ok, err
}
