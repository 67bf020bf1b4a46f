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

// leafDerivation is the first derivation of a sender's ratchets from the
// tree: the ratchets, and the node secrets that become known (the copath
// siblings) or are consumed (the path) on the way down from the nearest
// known ancestor.
type leafDerivation struct {
	ratchets [2]hashRatchet
	set      []nodeSecret
	clear    []treemath.NodeIndex
}

type nodeSecret struct {
	node   treemath.NodeIndex
	secret []byte
}

// deriveLeaf derives leaf's ratchets without changing the tree.
func (t *secretTree) deriveLeaf(leaf treemath.LeafIndex) (*leafDerivation, error) {
	if uint32(leaf) >= t.nLeaves {
		return nil, fmt.Errorf("%w: leaf %d outside a secret tree of %d leaves", ErrNotMember, leaf, t.nLeaves)
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
	d := &leafDerivation{}
	secret := t.nodes[x]
	for i := len(path) - 1; i > 0; i-- {
		p, child := path[i], path[i-1]
		left := expand(t.suite, secret, "tree", []byte("left"), t.suite.Nh())
		right := expand(t.suite, secret, "tree", []byte("right"), t.suite.Nh())
		if i < len(path)-1 {
			wipe(secret) // a derived secret on the path, not the tree's
		}
		d.clear = append(d.clear, p)
		if child == treemath.Left(p) {
			secret = left
			d.set = append(d.set, nodeSecret{treemath.Right(p), right})
		} else {
			secret = right
			d.set = append(d.set, nodeSecret{treemath.Left(p), left})
		}
	}
	d.clear = append(d.clear, leaf.Node())
	d.ratchets = [2]hashRatchet{
		{secret: expand(t.suite, secret, "handshake", nil, t.suite.Nh())},
		{secret: expand(t.suite, secret, "application", nil, t.suite.Nh())},
	}
	if len(path) > 1 {
		wipe(secret)
	}
	return d, nil
}

// applyLeaf records a leaf's first derivation, deleting the consumed node
// secrets (RFC 9420 §9.2).
func (t *secretTree) applyLeaf(leaf treemath.LeafIndex, d *leafDerivation) *[2]hashRatchet {
	for _, x := range d.clear {
		wipe(t.nodes[x])
		t.nodes[x] = nil
	}
	for _, n := range d.set {
		t.nodes[n.node] = n.secret
	}
	r := &d.ratchets
	t.senders[leaf] = r
	return r
}

func (d *leafDerivation) wipe() {
	for _, n := range d.set {
		wipe(n.secret)
	}
	for k := range d.ratchets {
		wipe(d.ratchets[k].secret)
	}
}

// ratchet returns leaf's ratchet of the given kind, deriving the leaf's
// ratchets from the tree on first use.
func (t *secretTree) ratchet(leaf treemath.LeafIndex, kind ratchetKind) (*hashRatchet, error) {
	if r := t.senders[leaf]; r != nil {
		return &r[kind], nil
	}
	d, err := t.deriveLeaf(leaf)
	if err != nil {
		return nil, err
	}
	return &t.applyLeaf(leaf, d)[kind], nil
}

// keyAt derives the key and nonce of generation gen from ratchet_secret_[gen].
func (t *secretTree) keyAt(secret []byte, gen uint32) keyNonce {
	s := t.suite
	return keyNonce{
		key:   deriveTree(s, secret, "key", gen, s.KeySize()),
		nonce: deriveTree(s, secret, "nonce", gen, s.NonceSize()),
	}
}

// step derives the key and nonce of generation r.next and advances the
// ratchet, deleting the old ratchet secret.
func (t *secretTree) step(r *hashRatchet) keyNonce {
	kn := t.keyAt(r.secret, r.next)
	next := deriveTree(t.suite, r.secret, "secret", r.next, t.suite.Nh())
	wipe(r.secret)
	r.secret = next
	r.next++
	return kn
}

// next returns the key, nonce and generation for the next message leaf
// sends. The key is not kept: each generation encrypts one message.
func (t *secretTree) next(leaf treemath.LeafIndex, kind ratchetKind) (keyNonce, uint32, error) {
	if uint32(leaf) >= t.nLeaves {
		return keyNonce{}, 0, fmt.Errorf("mls: leaf %d outside a secret tree of %d leaves", leaf, t.nLeaves)
	}
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

// advance is how the ratchet of one sender moves when a received message
// of generation gen is accepted. get computes it without changing the
// tree; consume applies it once the message is authenticated, so that a
// forged or rejected message changes nothing.
type advance struct {
	leaf treemath.LeafIndex
	kind ratchetKind
	gen  uint32
	// stored is set when gen's key was kept from earlier (a late message).
	stored bool
	// fresh holds the sender's first ratchet derivation, when this is its
	// first message in the epoch.
	fresh *leafDerivation
	// from is the ratchet's next generation before the message; skipped
	// holds the keys of generations from..gen-1, to keep for late messages,
	// and secret the ratchet secret of generation gen+1.
	from    uint32
	skipped []keyNonce
	secret  []byte
	key     keyNonce // gen's key, when not stored
	done    bool
}

// get returns the key and nonce of generation gen of leaf's ratchet, and
// the advance that consume applies after the message authenticated. It
// changes nothing. A generation may be at most MaxForward ahead of the
// newest one seen, and at most OutOfOrder behind it.
func (t *secretTree) get(leaf treemath.LeafIndex, kind ratchetKind, gen uint32) (keyNonce, *advance, error) {
	a := &advance{leaf: leaf, kind: kind, gen: gen}
	var r *hashRatchet
	if rs := t.senders[leaf]; rs != nil {
		r = &rs[kind]
	} else {
		d, err := t.deriveLeaf(leaf)
		if err != nil {
			return keyNonce{}, nil, err
		}
		a.fresh = d
		r = &d.ratchets[kind]
	}
	if gen < r.next {
		if kn, ok := r.keys[gen]; ok {
			a.stored = true
			return kn, a, nil
		}
		a.discard()
		// Every generation inside the window that is not kept was used:
		// keys are kept from the moment they are derived until consumed.
		if r.next-1-gen <= t.cfg.outOfOrder() {
			return keyNonce{}, nil, ErrReplay
		}
		return keyNonce{}, nil, ErrGenerationTooOld
	}
	if gen-r.next > t.cfg.maxForward() || gen == ^uint32(0) {
		a.discard()
		return keyNonce{}, nil, ErrGenerationTooNew
	}
	a.from = r.next
	secret := r.secret
	for g := r.next; ; g++ {
		kn := t.keyAt(secret, g)
		next := deriveTree(t.suite, secret, "secret", g, t.suite.Nh())
		if g > r.next {
			wipe(secret) // derived here, not the ratchet's own
		}
		secret = next
		if g == gen {
			a.key, a.secret = kn, secret
			return kn, a, nil
		}
		// Only the keys that will fall inside the window are kept.
		if gen-g <= t.cfg.outOfOrder() {
			a.skipped = append(a.skipped, kn)
		} else {
			kn.wipe()
			a.skipped = append(a.skipped, keyNonce{})
		}
	}
}

// consume applies an advance from get: the message's key is used up and
// deleted, skipped generations' keys are kept inside the window.
func (t *secretTree) consume(a *advance) {
	if a.done {
		return
	}
	a.done = true
	rs := t.senders[a.leaf]
	if rs == nil {
		rs = t.applyLeaf(a.leaf, a.fresh)
	} else if a.fresh != nil {
		a.fresh.wipe() // another message derived the same ratchets first
	}
	r := &rs[a.kind]
	if a.stored {
		if kn, ok := r.keys[a.gen]; ok {
			kn.wipe()
			delete(r.keys, a.gen)
		}
		return
	}
	if r.keys == nil {
		r.keys = map[uint32]keyNonce{}
	}
	for i, kn := range a.skipped {
		if kn.key != nil {
			r.keys[a.from+uint32(i)] = kn
		}
	}
	wipe(r.secret)
	r.secret = a.secret
	r.next = a.gen + 1
	a.key.wipe()
	t.prune(r)
}

// discard drops an advance that will not be applied, deleting the keys it
// derived.
func (a *advance) discard() {
	if a == nil || a.done {
		return
	}
	a.done = true
	if a.fresh != nil {
		a.fresh.wipe()
	}
	for _, kn := range a.skipped {
		kn.wipe()
	}
	wipe(a.secret)
	a.key.wipe()
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
