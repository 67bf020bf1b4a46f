package mls

import (
	"fmt"
	"slices"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// stateVersion is the version of the encoding MarshalState writes. A
// reader refuses other versions rather than guess.
const stateVersion = 1

// MarshalState encodes the group's whole state — including its private
// keys and epoch secrets — so that UnmarshalState continues exactly where
// the group was. The bytes are as secret as the keys: store them
// encrypted. Layout (TLS presentation language):
//
//	uint16 version = 1;
//	CipherSuite suite;
//	opaque signature_private_key<V>;
//	GroupContext context;
//	optional<Node> ratchet_tree<V>;
//	PrivateTree own_keys;            // leaf, then (node, priv, pub) entries
//	EpochSecrets secrets;            // nine opaque<V> in fixed order
//	SecretTree secret_tree;
//	opaque interim_transcript_hash<V>;
//	opaque confirmation_tag<V>;
//	CachedProposal proposals<V>;     // ref, Sender, Proposal
//	KeyPair pending_updates<V>;
//	ResumptionPSK resumption<V>;     // epoch, secret
//	optional<ReInit> reinit;
func (g *Group) MarshalState() []byte {
	var b codec.Builder
	b.AddUint16(stateVersion)
	b.AddUint16(uint16(g.suite.ID()))
	b.AddOpaque(g.signer.Bytes())
	g.ctx.MarshalTLS(&b)
	g.tree.export().MarshalTLS(&b)
	g.priv.MarshalTLS(&b)
	g.secrets.MarshalTLS(&b)
	g.secretTree.MarshalTLS(&b)
	b.AddOpaque(g.interim)
	b.AddOpaque(g.confirmationTag)
	codec.AddList(&b, g.proposals, func(b *codec.Builder, p cachedProposal) {
		b.AddOpaque(p.ref)
		p.sender.MarshalTLS(b)
		marshalProposal(b, p.proposal)
	})
	codec.AddList(&b, g.pendingUpdates, func(b *codec.Builder, k nodeKey) {
		b.AddOpaque(k.priv)
		b.AddOpaque(k.pub)
	})
	codec.AddList(&b, g.resumption, func(b *codec.Builder, r resumptionPSK) {
		b.AddUint64(r.epoch)
		b.AddOpaque(r.secret)
	})
	b.AddOptional(g.reinit != nil, func(b *codec.Builder) { g.reinit.MarshalTLS(b) })
	return b.Bytes()
}

// UnmarshalState restores a group from MarshalState's bytes, with cfg as
// its configuration (configuration is not part of the state).
func UnmarshalState(data []byte, cfg Config) (*Group, error) {
	r := codec.NewReader(data)
	if v := r.Uint16(); r.Err() == nil && v != stateVersion {
		return nil, fmt.Errorf("%w: group state version %d", ErrUnsupported, v)
	}
	s, err := cipher.Lookup(CipherSuite(r.Uint16()))
	if r.Err() == nil && err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	g := &Group{suite: s, cfg: cfg}
	signerKey := r.Opaque(MaxKeySize)
	var ctx GroupContext
	ctx.UnmarshalTLS(r)
	var rt RatchetTree
	rt.UnmarshalTLS(r)
	g.priv = new(privateTree)
	g.priv.UnmarshalTLS(r)
	g.secrets.UnmarshalTLS(r)
	g.secretTree = &secretTree{suite: s, cfg: cfg.Ratchet}
	g.secretTree.UnmarshalTLS(r)
	g.interim = r.Opaque(MaxKeySize)
	g.confirmationTag = r.Opaque(MaxKeySize)
	g.proposals = codec.ReadList(r, MaxDataSize, MaxProposals, func(r *codec.Reader) cachedProposal {
		var p cachedProposal
		p.ref = r.Opaque(MaxKeySize)
		p.sender.UnmarshalTLS(r)
		p.proposal = readProposal(r)
		return p
	})
	g.pendingUpdates = codec.ReadList(r, MaxDataSize, MaxProposals, func(r *codec.Reader) nodeKey {
		return nodeKey{priv: r.Opaque(MaxKeySize), pub: r.Opaque(MaxKeySize)}
	})
	g.resumption = codec.ReadList(r, MaxDataSize, 1<<16, func(r *codec.Reader) resumptionPSK {
		return resumptionPSK{epoch: r.Uint64(), secret: r.Opaque(MaxKeySize)}
	})
	if r.Optional() {
		g.reinit = new(ReInitProposal)
		g.reinit.UnmarshalTLS(r)
	}
	if err := r.Finish(); err != nil {
		return nil, fmt.Errorf("%w: group state: %w", ErrMalformed, err)
	}
	if g.signer, err = s.NewSigner(signerKey); err != nil {
		return nil, err
	}
	if g.tree, err = importRatchetTree(s, rt); err != nil {
		return nil, err
	}
	g.setContext(ctx)
	if g.secretTree.nLeaves != g.tree.numLeaves() || g.tree.leaf(g.priv.leaf) == nil {
		return nil, fmt.Errorf("%w: group state is inconsistent", ErrMalformed)
	}
	return g, nil
}

// MarshalTLS implements codec.Marshaler for the secret tree's state.
func (t *secretTree) MarshalTLS(b *codec.Builder) {
	b.AddUint32(t.nLeaves)
	b.AddVector(func(b *codec.Builder) {
		for x, s := range t.nodes {
			if s != nil {
				b.AddUint32(uint32(x))
				b.AddOpaque(s)
			}
		}
	})
	leaves := make([]LeafIndex, 0, len(t.senders))
	for l := range t.senders {
		leaves = append(leaves, l)
	}
	slices.Sort(leaves)
	codec.AddList(b, leaves, func(b *codec.Builder, l LeafIndex) {
		b.AddUint32(uint32(l))
		for _, r := range t.senders[l] {
			b.AddUint32(r.next)
			b.AddOpaque(r.secret)
			gens := make([]uint32, 0, len(r.keys))
			for g := range r.keys {
				gens = append(gens, g)
			}
			slices.Sort(gens)
			codec.AddList(b, gens, func(b *codec.Builder, g uint32) {
				b.AddUint32(g)
				b.AddOpaque(r.keys[g].key)
				b.AddOpaque(r.keys[g].nonce)
			})
		}
	})
}

// UnmarshalTLS implements codec.Unmarshaler. suite and cfg must be set.
func (t *secretTree) UnmarshalTLS(r *codec.Reader) {
	t.nLeaves = r.Uint32()
	if t.nLeaves == 0 || t.nLeaves > MaxLeaves || t.nLeaves&(t.nLeaves-1) != 0 {
		r.Failf("secret tree of %d leaves", t.nLeaves)
		return
	}
	t.nodes = make([][]byte, 2*t.nLeaves-1)
	r.Vector(MaxDataSize, func(r *codec.Reader) {
		for !r.Empty() {
			x := r.Uint32()
			s := r.Opaque(MaxKeySize)
			if x >= uint32(len(t.nodes)) {
				r.Failf("secret tree node %d", x)
				return
			}
			t.nodes[x] = s
		}
	})
	t.senders = map[LeafIndex]*[2]hashRatchet{}
	r.Vector(MaxDataSize, func(r *codec.Reader) {
		for !r.Empty() {
			l := LeafIndex(r.Uint32())
			if uint32(l) >= t.nLeaves {
				r.Failf("secret tree sender %d", l)
				return
			}
			var rs [2]hashRatchet
			for k := range rs {
				rs[k].next = r.Uint32()
				rs[k].secret = r.Opaque(MaxKeySize)
				rs[k].keys = map[uint32]keyNonce{}
				r.Vector(MaxDataSize, func(r *codec.Reader) {
					for !r.Empty() {
						g := r.Uint32()
						rs[k].keys[g] = keyNonce{key: r.Opaque(MaxKeySize), nonce: r.Opaque(MaxKeySize)}
					}
				})
			}
			t.senders[l] = &rs
		}
	})
}
