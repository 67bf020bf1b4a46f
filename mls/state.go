package mls

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// stateVersion is the version of the encoding MarshalState writes. A
// reader refuses other versions rather than guess. Version 1 (before past
// epochs and pending commits were kept) is not read: no state of it was
// ever stored outside tests.
const stateVersion = 2

// State flags.
const (
	stateJoining = 1 << 0
	stateRemoved = 1 << 1
)

// MarshalState encodes the group's whole state — its private keys, epoch
// secrets, the keys of the past epochs it keeps, cached proposals and a
// pending Commit — so that UnmarshalState continues exactly where the group
// was. The bytes are as secret as the keys: store them encrypted, and
// store the new state after every Process, Encrypt, Propose and Commit
// (each spends or creates keys). Layout (TLS presentation language):
//
//	uint16 version = 2;
//	CipherSuite suite;
//	opaque signature_private_key<V>;
//	uint8 flags;                     // 1: external join unmerged, 2: removed
//	EpochState current;
//	ProposalEntry proposals<V>;      // ref (empty: by value), Sender, Proposal
//	KeyPair pending_updates<V>;      // priv, pub
//	ResumptionPSK resumption<V>;     // epoch, secret
//	PastEpoch past<V>;
//	optional<ReInit> reinit;
//	optional<PendingCommit> pending;
//
//	EpochState: GroupContext; optional<Node> ratchet_tree<V>;
//	  PrivateTree own_keys;          // leaf, then (node, priv, pub) entries
//	  EpochSecrets secrets;          // nine opaque<V> in fixed order
//	  SecretTree secret_tree;
//	  opaque interim_transcript_hash<V>; opaque confirmation_tag<V>;
//	PastEpoch: uint64 epoch; opaque group_context<V>;
//	  opaque signature_keys<V><V>;   // per leaf, empty when blank
//	  opaque sender_data_secret<V>; SecretTree secret_tree; opaque end_tag<V>;
//	PendingCommit: uint64 epoch; MLSMessage commit; optional<Welcome>;
//	  GroupInfo; EpochState next; CommitResult; Proposal by_value<V>;
func (g *Group) MarshalState() []byte {
	var b codec.Builder
	b.AddUint16(stateVersion)
	b.AddUint16(uint16(g.suite.ID()))
	b.AddOpaque(g.signer.Bytes())
	var flags uint8
	if g.joining {
		flags |= stateJoining
	}
	if g.removed {
		flags |= stateRemoved
	}
	b.AddUint8(flags)
	g.epochState.marshal(&b)
	codec.AddList(&b, g.proposals, marshalEntry)
	codec.AddList(&b, g.pendingUpdates, func(b *codec.Builder, k nodeKey) {
		b.AddOpaque(k.priv)
		b.AddOpaque(k.pub)
	})
	codec.AddList(&b, g.resumption, func(b *codec.Builder, r resumptionPSK) {
		b.AddUint64(r.epoch)
		b.AddOpaque(r.secret)
	})
	codec.AddList(&b, g.past, func(b *codec.Builder, p *pastEpoch) {
		b.AddUint64(p.epoch)
		b.AddOpaque(p.ctxBytes)
		codec.AddList(b, p.sigKeys, func(b *codec.Builder, k []byte) { b.AddOpaque(k) })
		b.AddOpaque(p.senderData)
		p.secretTree.MarshalTLS(b)
		b.AddOpaque(p.endTag)
	})
	b.AddOptional(g.reinit != nil, func(b *codec.Builder) { g.reinit.MarshalTLS(b) })
	b.AddOptional(g.pending != nil, func(b *codec.Builder) { g.pending.marshal(b) })
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
	flags := r.Uint8()
	g.joining, g.removed = flags&stateJoining != 0, flags&stateRemoved != 0
	// A joining group's own leaf is in the epoch it joins, not this one.
	cur := readEpochState(r, s, cfg, !g.joining)
	g.proposals = codec.ReadList(r, MaxDataSize, MaxProposals, readEntry)
	g.pendingUpdates = codec.ReadList(r, MaxDataSize, MaxProposals, func(r *codec.Reader) nodeKey {
		return nodeKey{priv: r.Opaque(MaxKeySize), pub: r.Opaque(MaxKeySize)}
	})
	g.resumption = codec.ReadList(r, MaxDataSize, MaxResumptionHistory, func(r *codec.Reader) resumptionPSK {
		return resumptionPSK{epoch: r.Uint64(), secret: r.Opaque(MaxKeySize)}
	})
	g.past = codec.ReadList(r, MaxDataSize, MaxPastEpochs, func(r *codec.Reader) *pastEpoch {
		p := &pastEpoch{epoch: r.Uint64(), ctxBytes: r.Opaque(MaxDataSize)}
		p.sigKeys = codec.ReadList(r, MaxDataSize, MaxLeaves, func(r *codec.Reader) []byte {
			if k := r.Opaque(MaxKeySize); len(k) > 0 {
				return k
			}
			return nil
		})
		p.senderData = r.Opaque(MaxKeySize)
		p.secretTree = &secretTree{suite: s, cfg: cfg.Ratchet}
		p.secretTree.UnmarshalTLS(r)
		p.endTag = r.Opaque(MaxKeySize)
		return p
	})
	if r.Optional() {
		g.reinit = new(ReInitProposal)
		g.reinit.UnmarshalTLS(r)
	}
	var pendingErr error
	if r.Optional() {
		g.pending, pendingErr = readPendingCommit(r, s, cfg)
	}
	if err := r.Finish(); err != nil {
		return nil, fmt.Errorf("%w: group state: %w", ErrMalformed, err)
	}
	if cur.err != nil {
		return nil, cur.err
	}
	if pendingErr != nil {
		return nil, pendingErr
	}
	g.epochState = *cur.state
	if g.signer, err = s.NewSigner(signerKey); err != nil {
		return nil, fmt.Errorf("%w: group state: %w", ErrMalformed, err)
	}
	if own := g.tree.leaf(g.priv.leaf); !g.joining && (own == nil || !bytes.Equal(own.SignatureKey, g.signer.Public())) {
		return nil, fmt.Errorf("%w: group state: signature key does not match the own leaf", ErrMalformed)
	}
	for _, p := range g.past {
		if uint32(len(p.sigKeys)) != p.secretTree.nLeaves {
			return nil, fmt.Errorf("%w: group state: past epoch %d is inconsistent", ErrMalformed, p.epoch)
		}
	}
	return g, nil
}

// marshalEntry writes a ProposalEntry: ref (empty for none), Sender,
// Proposal.
func marshalEntry(b *codec.Builder, p ProposalEntry) {
	b.AddOpaque(p.Ref)
	p.Sender.MarshalTLS(b)
	marshalProposal(b, p.Proposal)
}

func readEntry(r *codec.Reader) ProposalEntry {
	var p ProposalEntry
	if ref := r.Opaque(MaxKeySize); len(ref) > 0 {
		p.Ref = ref
	}
	p.Sender.UnmarshalTLS(r)
	p.Proposal = readProposal(r)
	return p
}

// marshal writes an EpochState (see MarshalState).
func (e *epochState) marshal(b *codec.Builder) {
	e.ctx.MarshalTLS(b)
	e.tree.export().MarshalTLS(b)
	e.priv.MarshalTLS(b)
	e.secrets.MarshalTLS(b)
	e.secretTree.MarshalTLS(b)
	b.AddOpaque(e.interim)
	b.AddOpaque(e.confirmationTag)
}

// readEpoch is an EpochState as read; the checks that need more than the
// syntax run once the whole state has been read.
type readEpoch struct {
	state *epochState
	err   error
}

func readEpochState(r *codec.Reader, s cipher.Suite, cfg Config, ownLeaf bool) readEpoch {
	e := &epochState{priv: new(privateTree), secretTree: &secretTree{suite: s, cfg: cfg.Ratchet}}
	var ctx GroupContext
	ctx.UnmarshalTLS(r)
	var rt RatchetTree
	rt.UnmarshalTLS(r)
	e.priv.UnmarshalTLS(r)
	e.secrets.UnmarshalTLS(r)
	e.secretTree.UnmarshalTLS(r)
	e.interim = r.Opaque(MaxKeySize)
	e.confirmationTag = r.Opaque(MaxKeySize)
	if r.Err() != nil {
		return readEpoch{}
	}
	e.setContext(ctx)
	t, err := importRatchetTree(s, rt)
	if err != nil {
		return readEpoch{err: err}
	}
	e.tree = t
	if e.secretTree.nLeaves != t.numLeaves() || ownLeaf && uint32(e.priv.leaf) >= t.numLeaves() {
		return readEpoch{err: fmt.Errorf("%w: group state is inconsistent", ErrMalformed)}
	}
	return readEpoch{state: e}
}

// marshal writes a PendingCommit (see MarshalState).
func (pc *PendingCommit) marshal(b *codec.Builder) {
	b.AddUint64(pc.epoch)
	pc.Message.MarshalTLS(b)
	b.AddOptional(pc.Welcome != nil, func(b *codec.Builder) { pc.Welcome.MarshalTLS(b) })
	pc.GroupInfo.MarshalTLS(b)
	pc.next.marshal(b)
	res := pc.result
	b.AddUint64(res.Epoch)
	res.Committer.MarshalTLS(b)
	codec.AddList(b, res.Proposals, marshalEntry)
	codec.AddList(b, res.Added, func(b *codec.Builder, l LeafIndex) { b.AddUint32(uint32(l)) })
	codec.AddList(b, res.Removed, func(b *codec.Builder, m Member) {
		b.AddUint32(uint32(m.Leaf))
		m.Credential.MarshalTLS(b)
		b.AddOpaque(m.SignatureKey)
	})
	codec.AddList(b, pc.Skipped, func(b *codec.Builder, p SkippedProposal) {
		marshalEntry(b, p.ProposalEntry)
		b.AddString(p.Reason.Error())
	})
	codec.AddList(b, pc.byValue, func(b *codec.Builder, p Proposal) { marshalProposal(b, p) })
}

// readPendingCommit reads a PendingCommit; the error reports a problem
// beyond the syntax, which r reports.
func readPendingCommit(r *codec.Reader, s cipher.Suite, cfg Config) (*PendingCommit, error) {
	pc := &PendingCommit{epoch: r.Uint64(), Message: new(MLSMessage), GroupInfo: new(GroupInfo), result: new(CommitResult)}
	pc.Message.UnmarshalTLS(r)
	if r.Optional() {
		pc.Welcome = new(Welcome)
		pc.Welcome.UnmarshalTLS(r)
	}
	pc.GroupInfo.UnmarshalTLS(r)
	next := readEpochState(r, s, cfg, true)
	res := pc.result
	res.Epoch = r.Uint64()
	res.Committer.UnmarshalTLS(r)
	res.Proposals = codec.ReadList(r, MaxDataSize, MaxProposals, readEntry)
	res.Added = codec.ReadList(r, MaxDataSize, MaxLeaves, func(r *codec.Reader) LeafIndex { return LeafIndex(r.Uint32()) })
	res.Removed = codec.ReadList(r, MaxDataSize, MaxLeaves, func(r *codec.Reader) Member {
		var m Member
		m.Leaf = LeafIndex(r.Uint32())
		m.Credential.UnmarshalTLS(r)
		m.SignatureKey = r.Opaque(MaxKeySize)
		return m
	})
	pc.Skipped = codec.ReadList(r, MaxDataSize, MaxProposals, func(r *codec.Reader) SkippedProposal {
		return SkippedProposal{ProposalEntry: readEntry(r), Reason: errors.New(string(r.Opaque(MaxDataSize)))}
	})
	pc.byValue = codec.ReadList(r, MaxDataSize, MaxProposals, readProposal)
	for _, p := range res.Proposals {
		if ri, ok := p.Proposal.(*ReInitProposal); ok {
			res.ReInit = ri
		}
	}
	res.Skipped = pc.Skipped
	pc.next = next.state
	if next.err != nil {
		return nil, next.err
	}
	if r.Err() == nil && pc.Message.WireFormat != WireFormatPublicMessage && pc.Message.WireFormat != WireFormatPrivateMessage {
		return nil, fmt.Errorf("%w: group state: pending commit is not a group message", ErrMalformed)
	}
	return pc, nil
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
	codec.AddList(b, slices.Sorted(maps.Keys(t.senders)), func(b *codec.Builder, l LeafIndex) {
		b.AddUint32(uint32(l))
		for _, r := range t.senders[l] {
			b.AddUint32(r.next)
			b.AddOpaque(r.secret)
			codec.AddList(b, slices.Sorted(maps.Keys(r.keys)), func(b *codec.Builder, g uint32) {
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
