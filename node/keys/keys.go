// Package keys keeps a node's stock of MLS KeyPackages: the single-use
// offers to be added to a group that peers fetch (fetchKeyPackage) from
// the node itself over the P2P link or from its home server, and the
// private halves (KeyPackageBundles) a Welcome is later opened with.
//
// Every KeyPackage is cipher suite 0x0001 with a BasicCredential whose
// identity is the node's Ed25519 identity key, also the leaf's signature
// key (DESIGN.md), and lists the node's own group context extension types
// in its capabilities so that it can join the node's groups.
//
// Make stores the bundles before it returns the packages, so a package is
// never offered whose private keys are not on disk. A bundle is deleted
// when a Welcome consumed it (ConsumeTx, in the transaction that stores
// the joined group); the node then makes a replacement for the place the
// package had been offered at. The package does not talk to the network.
//
// # Storage
//
// Bucket "node.keypackages": KeyPackageRef → place (1 byte) || bundle
// (mls.KeyPackageBundle.MarshalBinary, private keys included: the node's
// data directory is private, as for the identity key).
package keys

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/mls"
	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// Suite is the cipher suite of every group and KeyPackage of a node.
const Suite = mls.CipherSuite(cipher.X25519_AES128GCM_SHA256_Ed25519)

// DefaultStock is how many unused KeyPackages a node keeps on offer at
// each place.
const DefaultStock = 16

// MaxKeyPackageSize bounds a KeyPackage read from the network.
const MaxKeyPackageSize = 64 << 10

// Place says where a KeyPackage was offered.
type Place uint8

const (
	PlacePeers  Place = 1 // this node's own stock, served over the P2P link
	PlaceServer Place = 2 // uploaded to the home server
	// PlaceLastResort: the last-resort package served over the P2P link
	// when the stock is empty; a Welcome does not consume it.
	PlaceLastResort Place = 3
)

var bucketName = []byte("node.keypackages")

// Errors.
var (
	ErrCorrupt = errors.New("keys: stored bundle is corrupt")
	// ErrWrongIdentity: a KeyPackage that is not the asked identity's.
	ErrWrongIdentity = errors.New("keys: key package belongs to another identity")
)

// Stock is the node's KeyPackage stock. Its methods are safe for
// concurrent use.
type Stock struct {
	db     *bolt.DB
	signer cipher.Signer
	cred   mls.Credential
	opts   mls.LeafOptions
}

// New returns the stock kept in db for the node with identity priv.
// extensionTypes are the group context extensions the node's groups use.
func New(db *bolt.DB, priv ed25519.PrivateKey, extensionTypes []mls.ExtensionType) (*Stock, error) {
	signer, cred, err := mls.Ed25519Identity(priv)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("keys: create bucket: %w", err)
	}
	return &Stock{db: db, signer: signer, cred: cred, opts: mls.LeafOptions{ExtensionTypes: extensionTypes}}, nil
}

// Signer returns the node's MLS signer (its identity key).
func (s *Stock) Signer() cipher.Signer { return s.signer }

// Credential returns the node's MLS credential.
func (s *Stock) Credential() mls.Credential { return s.cred }

// LeafOptions returns the leaf options of the node's KeyPackages, for the
// groups it creates.
func (s *Stock) LeafOptions() mls.LeafOptions { return s.opts }

func validPlace(p Place) bool { return p >= PlacePeers && p <= PlaceLastResort }

// Make creates n KeyPackages offered at place, stores their bundles
// durably, and returns the packages TLS-encoded (the form uploadKeyPackage
// takes).
func (s *Stock) Make(place Place, n int) ([][]byte, error) {
	if !validPlace(place) {
		return nil, fmt.Errorf("keys: unknown place %d", place)
	}
	out := make([][]byte, 0, n)
	refs := make([][]byte, 0, n)
	vals := make([][]byte, 0, n)
	var ext mls.Extensions
	if place == PlaceLastResort {
		ext = mls.Extensions{mls.LastResort()}
	}
	for range n {
		b, err := mls.NewKeyPackage(Suite, s.signer, s.cred, s.opts, ext)
		if err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
		ref, err := b.Ref()
		if err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
		raw, err := b.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
		refs = append(refs, ref)
		vals = append(vals, append([]byte{byte(place)}, raw...))
		out = append(out, codec.Marshal(b.KeyPackage))
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketName)
		for i := range refs {
			if err := bk.Put(refs[i], vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keys: store bundles: %w", err)
	}
	return out, nil
}

// Count returns how many unused KeyPackages were offered at place.
func (s *Stock) Count(place Place) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketName).ForEach(func(_, v []byte) error {
			if len(v) > 0 && Place(v[0]) == place {
				n++
			}
			return nil
		})
	})
	return n, err
}

// ForWelcome finds the bundle of one of the KeyPackages w is addressed to.
// ok is false when none is ours (any more): a Welcome for someone else, or
// a second copy of one already used.
func (s *Stock) ForWelcome(w *mls.Welcome) (b *mls.KeyPackageBundle, ref []byte, place Place, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketName)
		for _, r := range w.KeyPackageRefs() {
			v := bk.Get(r)
			if v == nil {
				continue
			}
			if len(v) < 2 || !validPlace(Place(v[0])) {
				return ErrCorrupt
			}
			var err error
			if b, err = mls.UnmarshalKeyPackageBundle(v[1:]); err != nil {
				return fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			ref, place, ok = bytes.Clone(r), Place(v[0]), true
			return nil
		}
		return nil
	})
	return b, ref, place, ok, err
}

// ConsumeTx deletes the bundle of ref in tx: its package joined a group.
// A last-resort bundle stays.
func (s *Stock) ConsumeTx(tx *bolt.Tx, ref []byte) error {
	b := tx.Bucket(bucketName)
	if v := b.Get(ref); len(v) > 0 && Place(v[0]) == PlaceLastResort {
		return nil
	}
	return b.Delete(ref)
}

// ParsePeerKeyPackage decodes a KeyPackage fetched for identity (from the
// peer or from a home server, neither of which is trusted for it): the
// TLS-encoded struct or its MLSMessage-framed form, of this project's
// suite, valid now, with a credential that is identity's Ed25519 key.
func ParsePeerKeyPackage(data, identity []byte) (*mls.KeyPackage, error) {
	if len(data) == 0 {
		return nil, errors.New("keys: no key package on offer")
	}
	if len(data) > MaxKeyPackageSize {
		return nil, fmt.Errorf("keys: key package of %d bytes, limit %d", len(data), MaxKeyPackageSize)
	}
	kp, err := mls.DecodeKeyPackage(data)
	if err != nil {
		m, merr := mls.DecodeMLSMessage(data)
		if merr != nil || m.WireFormat != mls.WireFormatKeyPackage {
			return nil, fmt.Errorf("keys: %w", err)
		}
		kp = m.KeyPackage
	}
	if kp.CipherSuite != Suite {
		return nil, fmt.Errorf("keys: key package of suite 0x%04x, want 0x%04x", uint16(kp.CipherSuite), uint16(Suite))
	}
	if err := mls.ValidateKeyPackage(kp, time.Now()); err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	if err := mls.ValidateEd25519Identity(kp.LeafNode.Credential, kp.LeafNode.SignatureKey); err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	if !bytes.Equal(kp.LeafNode.Credential.Identity, identity) {
		return nil, ErrWrongIdentity
	}
	return kp, nil
}
