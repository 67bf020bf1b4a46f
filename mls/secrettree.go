package mls

import (
	"errors"
	"fmt"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/treemath"
)

// Defaults of RatchetConfig.
const (
	// DefaultMaxForward is how many generations a received message may
	// skip ahead of the newest one seen from its sender. A larger jump is
	// rejected rather than derived (RFC 9420 §15.3: bound the work a
	// malicious generation number can cause).
	DefaultMaxForward = 1000
	// DefaultOutOfOrder is how many generations behind the newest one a
	// late message may still be decrypted. Keys for skipped generations
	// inside this window are kept until used; older ones are deleted.
	DefaultOutOfOrder = 32
)

// RatchetConfig bounds the sender ratchets of the secret tree. The zero
// value means the defaults above.
type RatchetConfig struct {
	MaxForward uint32 // 0 means DefaultMaxForward
	OutOfOrder uint32 // 0 means DefaultOutOfOrder
}

func (c RatchetConfig) maxForward() uint32 {
	if c.MaxForward == 0 {
		return DefaultMaxForward
	}
	return c.MaxForward
}

func (c RatchetConfig) outOfOrder() uint32 {
	if c.OutOfOrder == 0 {
		return DefaultOutOfOrder
	}
	return c.OutOfOrder
}

// Errors of the sender ratchets.
var (
	// ErrGenerationTooOld: the key for this generation has left the
	// out-of-order window and been deleted (a key inside the window that
	// was used gives ErrReplay).
	ErrGenerationTooOld = errors.New("mls: message generation too old")
	// ErrGenerationTooNew: the generation is further ahead than the ratchet
	// may move.
	ErrGenerationTooNew = errors.New("mls: message generation too far ahead")
)

// ratchetKind selects one of the two hash ratchets of a sender.
type ratchetKind uint8

const (
	handshakeRatchet   ratchetKind = 0
	applicationRatchet ratchetKind = 1
)

// keyNonce is one generation's AEAD key and nonce.
type keyNonce struct {
	key, nonce []byte
}

func (k *keyNonce) wipe() {
	wipe(k.key)
	wipe(k.nonce)
}

// hashRatchet is one sender's handshake or application ratchet (RFC 9420
// §9.1). secret is ratchet_secret_[next]; keys holds the key and nonce of
// skipped generations below next that are still inside the out-of-order
// window.
type hashRatchet struct {
	next   uint32
	secret []byte
	keys   map[uint32]keyNonce
}

// secretTree derives per-sender ratchets from an epoch's encryption_secret
// (RFC 9420 §9). Node secrets are derived on demand from the nearest known
// ancestor, and a parent's secret is deleted once both children are
// derived, as the deletion schedule of §9.2 asks.
type secretTree struct {
	suite   cipher.Suite
	cfg     RatchetConfig
	nLeaves uint32
	nodes   [][]byte // tree_node_[x]_secret; nil once consumed or not yet derived
	senders map[treemath.LeafIndex]*[2]hashRatchet
}

func newSecretTree(s cipher.Suite, cfg RatchetConfig, encryptionSecret []byte, nLeaves uint32) *secretTree {
	t := &secretTree{
		suite:   s,
		cfg:     cfg,
		nLeaves: nLeaves,
		nodes:   make([][]byte, treemath.NodeWidth(nLeaves)),
		senders: map[treemath.LeafIndex]*[2]hashRatchet{},
	}
	t.nodes[treemath.Root(nLeaves)] = clone(encryptionSecret)
	return t
}

// ratchet returns leaf's ratchet of the given kind, deriving the leaf's
// ratchets from the tree on first use.
func (t *secretTree) ratchet(leaf treemath.LeafIndex, kind ratchetKind) (*hashRatchet, error) {
	if uint32(leaf) >= t.nLeaves {
		return nil, fmt.Errorf("mls: leaf %d outside a secret tree of %d leaves", leaf, t.nLeaves)
	}
	if r := t.senders[leaf]; r != nil {
		return &r[kind], nil
	}
	// Find the nearest ancestor whose secret is still known.
	x := leaf.Node()
	path := []treemath.NodeIndex{x}
	for t.nodes[x] == nil {
		if x == treemath.Root(t.nLeaves) {
			return nil, fmt.Errorf("mls: secret tree: secret for leaf %d already consumed", leaf)
		}
		x = treemath.Parent(x)
		path = append(path, x)
	}
	// Derive down to the leaf, consuming each parent on the way.
	for i := len(path) - 1; i > 0; i-- {
		p := path[i]
		secret := t.nodes[p]
		t.nodes[treemath.Left(p)] = expand(t.suite, secret, "tree", []byte("left"), t.suite.Nh())
		t.nodes[treemath.Right(p)] = expand(t.suite, secret, "tree", []byte("right"), t.suite.Nh())
		wipe(secret)
		t.nodes[p] = nil
	}
	secret := t.nodes[leaf.Node()]
	r := &[2]hashRatchet{
		{secret: expand(t.suite, secret, "handshake", nil, t.suite.Nh())},
		{secret: expand(t.suite, secret, "application", nil, t.suite.Nh())},
	}
	wipe(secret)
	t.nodes[leaf.Node()] = nil
	t.senders[leaf] = r
	return &r[kind], nil
}

// step derives the key and nonce of generation r.next and advances the
// ratchet, deleting the old ratchet secret.
func (t *secretTree) step(r *hashRatchet) keyNonce {
	s := t.suite
	kn := keyNonce{
		key:   deriveTree(s, r.secret, "key", r.next, s.KeySize()),
		nonce: deriveTree(s, r.secret, "nonce", r.next, s.NonceSize()),
	}
	next := deriveTree(s, r.secret, "secret", r.next, s.Nh())
	wipe(r.secret)
	r.secret = next
	r.next++
	return kn
}

// next returns the key, nonce and generation for the next message leaf
// sends. The key is not kept: each generation encrypts one message.
func (t *secretTree) next(leaf treemath.LeafIndex, kind ratchetKind) (keyNonce, uint32, error) {
	r, err := t.ratchet(leaf, kind)
	if err != nil {
		return keyNonce{}, 0, err
	}
	if r.next == ^uint32(0) {
		return keyNonce{}, 0, ErrGenerationTooNew
	}
	gen := r.next
	return t.step(r), gen, nil
}

// get returns the key and nonce of generation gen of leaf's ratchet without
// consuming them: the caller calls consume after the message decrypted, so a
// forged message cannot burn the key of a genuine one. Moving forward keeps
// the skipped generations' keys inside the out-of-order window.
func (t *secretTree) get(leaf treemath.LeafIndex, kind ratchetKind, gen uint32) (keyNonce, error) {
	r, err := t.ratchet(leaf, kind)
	if err != nil {
		return keyNonce{}, err
	}
	if gen < r.next {
		if kn, ok := r.keys[gen]; ok {
			return kn, nil
		}
		// Every generation inside the window that is not kept was used:
		// keys are kept from the moment they are derived until consumed.
		if r.next-1-gen <= t.cfg.outOfOrder() {
			return keyNonce{}, ErrReplay
		}
		return keyNonce{}, ErrGenerationTooOld
	}
	if gen-r.next > t.cfg.maxForward() || gen == ^uint32(0) {
		return keyNonce{}, ErrGenerationTooNew
	}
	if r.keys == nil {
		r.keys = map[uint32]keyNonce{}
	}
	for r.next <= gen {
		g := r.next
		r.keys[g] = t.step(r)
	}
	t.prune(r)
	return r.keys[gen], nil
}

// used reports, without changing anything, whether the key of generation
// gen of leaf's ratchet was used: it is inside the out-of-order window but
// no longer kept.
func (t *secretTree) used(leaf treemath.LeafIndex, kind ratchetKind, gen uint32) bool {
	rs := t.senders[leaf]
	if rs == nil {
		return false
	}
	r := &rs[kind]
	if gen >= r.next {
		return false
	}
	_, kept := r.keys[gen]
	return !kept && r.next-1-gen <= t.cfg.outOfOrder()
}

// consume deletes the key of generation gen after its one use.
func (t *secretTree) consume(leaf treemath.LeafIndex, kind ratchetKind, gen uint32) {
	r := t.senders[leaf]
	if r == nil {
		return
	}
	if kn, ok := r[kind].keys[gen]; ok {
		kn.wipe()
		delete(r[kind].keys, gen)
	}
}

// prune deletes kept keys that fell out of the out-of-order window.
func (t *secretTree) prune(r *hashRatchet) {
	window := t.cfg.outOfOrder()
	for g, kn := range r.keys {
		// Keep generations in [next-1-window, next-1]; the newest derived
		// key (next-1) is always kept until consumed.
		if r.next-1-g > window {
			kn.wipe()
			delete(r.keys, g)
		}
	}
}

// wipeAll deletes every secret the tree still holds, at the end of its
// epoch.
func (t *secretTree) wipeAll() {
	for i, s := range t.nodes {
		wipe(s)
		t.nodes[i] = nil
	}
	for leaf, r := range t.senders {
		for k := range r {
			wipe(r[k].secret)
			for _, kn := range r[k].keys {
				kn.wipe()
			}
		}
		delete(t.senders, leaf)
	}
}

// senderDataKeyNonce derives the key and nonce that protect a
// PrivateMessage's sender data from the first Nh bytes of its ciphertext
// (RFC 9420 §6.3.2).
func senderDataKeyNonce(s cipher.Suite, senderDataSecret, ciphertext []byte) keyNonce {
	sample := ciphertext
	if len(sample) > s.Nh() {
		sample = sample[:s.Nh()]
	}
	return keyNonce{
		key:   expand(s, senderDataSecret, "key", sample, s.KeySize()),
		nonce: expand(s, senderDataSecret, "nonce", sample, s.NonceSize()),
	}
}
