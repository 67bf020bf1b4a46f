package mls

import (
	"bytes"
	"fmt"
	"time"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// DefaultResumptionHistory is how many past epochs' resumption PSKs a
// group keeps for PreSharedKey proposals that name them.
const DefaultResumptionHistory = 16

// DefaultPastEpochs is how many epochs before the current one a group keeps
// the keys to decrypt late application messages of.
//
// Forward secrecy trade-off: for each kept epoch the group holds that
// epoch's secret tree and sender-data secret (and nothing else of the
// epoch's key schedule). Whoever compromises the state can read the
// messages of those epochs that were not received yet, no more: keys that
// were used are deleted at once, in kept epochs as in the current one.
// Messages delivered over several paths (a direct link and a home server)
// arrive out of order across senders; two epochs cover a message that was
// overtaken by one or two Commits.
const DefaultPastEpochs = 2

// Config tunes a Group. The zero value means the documented defaults.
// Configuration is not part of the persisted state: pass it again to
// UnmarshalState.
type Config struct {
	// Ratchet bounds the out-of-order window of the secret tree.
	Ratchet RatchetConfig
	// PSKs looks up pre-shared keys this client holds; nil means none.
	PSKs PSKStore
	// ResumptionHistory is how many past epochs' resumption PSKs to keep,
	// at most MaxResumptionHistory; 0 means DefaultResumptionHistory.
	ResumptionHistory int
	// PastEpochs is how many past epochs' decryption keys to keep for late
	// application messages, at most MaxPastEpochs; 0 means
	// DefaultPastEpochs, a negative value keeps none (a message of a past
	// epoch is then ErrEpochExpired).
	PastEpochs int
	// ValidateCredential, when set, is called for every credential that
	// enters the group (KeyPackages of Adds, Updates, Commit paths, the
	// tree of a Welcome or GroupInfo) with the leaf's signature key; an
	// error rejects the leaf. This is the authentication service of
	// RFC 9420 §5.3.1; nil accepts every credential.
	// ValidateEd25519Identity implements the rule of this project.
	ValidateCredential func(c Credential, signatureKey []byte) error
	// Now returns the time against which LeafNode lifetimes are checked;
	// nil means time.Now.
	Now func() time.Time
}

func (c *Config) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

func (c *Config) resumptionHistory() int {
	if c.ResumptionHistory <= 0 {
		return DefaultResumptionHistory
	}
	return min(c.ResumptionHistory, MaxResumptionHistory)
}

func (c *Config) pastEpochs() int {
	switch {
	case c.PastEpochs < 0:
		return 0
	case c.PastEpochs == 0:
		return DefaultPastEpochs
	}
	return min(c.PastEpochs, MaxPastEpochs)
}

// PSKStore gives a group the pre-shared keys its client holds. It is
// called while processing Welcomes and Commits that name PSKs.
type PSKStore interface {
	// ExternalPSK returns the external PSK with this psk_id.
	ExternalPSK(id []byte) ([]byte, bool)
	// ResumptionPSK returns the resumption_psk of another group's epoch
	// (for branches and re-initializations); a group's own past epochs
	// are kept by the group itself.
	ResumptionPSK(groupID []byte, epoch uint64) ([]byte, bool)
}

// ExternalPSKs is a PSKStore of external PSKs by psk_id.
type ExternalPSKs map[string][]byte

// ExternalPSK implements PSKStore.
func (m ExternalPSKs) ExternalPSK(id []byte) ([]byte, bool) {
	v, ok := m[string(id)]
	return v, ok
}

// ResumptionPSK implements PSKStore; it holds none.
func (ExternalPSKs) ResumptionPSK([]byte, uint64) ([]byte, bool) { return nil, false }

// epochState is everything about a group that changes with the epoch. A
// commit builds a new epochState beside the current one and replaces it
// only once it is fully verified.
type epochState struct {
	ctx             GroupContext
	ctxBytes        []byte // encoding of ctx
	tree            *ratchetTree
	priv            *privateTree
	secrets         epochSecrets
	secretTree      *secretTree
	interim         []byte // interim transcript hash
	confirmationTag []byte // of the commit (or creation) that began the epoch
}

func (e *epochState) setContext(ctx GroupContext) {
	e.ctx = ctx
	e.ctxBytes = codec.Marshal(&ctx)
}

// pastEpoch is what a group keeps of an epoch it has left: exactly what
// decrypting and authenticating a late PrivateMessage of that epoch takes.
type pastEpoch struct {
	epoch      uint64
	ctxBytes   []byte      // the epoch's GroupContext, signed over by senders
	sigKeys    [][]byte    // signature key per leaf (nil: blank)
	senderData []byte      // sender_data_secret
	secretTree *secretTree // its ratchets, with used keys already deleted
	// endTag is the confirmation tag of the Commit that ended the epoch,
	// to tell a replay of that Commit from a competing one.
	endTag []byte
}

func (p *pastEpoch) wipe() {
	wipe(p.senderData)
	p.secretTree.wipeAll()
}

// Group is one member's view of an MLS group. It is not safe for
// concurrent use.
type Group struct {
	suite  cipher.Suite
	cfg    Config
	signer cipher.Signer

	epochState
	proposals      []ProposalEntry // received or sent this epoch, for Commits that name them
	pendingUpdates []nodeKey       // leaf keys of this member's Update proposals this epoch
	resumption     []resumptionPSK // newest last
	past           []*pastEpoch    // oldest first, at most cfg.pastEpochs()
	pending        *PendingCommit  // this member's Commit awaiting confirmation
	reinit         *ReInitProposal // set once a ReInit has been committed
	// joining is set between JoinExternal and the merge of its Commit:
	// the group has no keys for the epoch it holds.
	joining bool
	// removed is set once a Commit removed this member.
	removed bool
	// memberKeys caches parsed signature keys; derived, never persisted.
	memberKeys memberKeys
}

// usable reports why the group cannot send or process handshake messages,
// if it cannot.
func (g *Group) usable() error {
	switch {
	case g.joining:
		return fmt.Errorf("%w: external join not merged yet", ErrWrongEpoch)
	case g.removed:
		return ErrRemoved
	case g.reinit != nil:
		return fmt.Errorf("%w: group was re-initialized", ErrWrongEpoch)
	}
	return nil
}

type resumptionPSK struct {
	epoch  uint64
	secret []byte
}

// Epoch returns the current epoch number.
func (g *Group) Epoch() uint64 { return g.ctx.Epoch }

// GroupID returns the group's ID.
func (g *Group) GroupID() []byte { return clone(g.ctx.GroupID) }

// CipherSuite returns the group's cipher suite.
func (g *Group) CipherSuite() CipherSuite { return g.suite.ID() }

// OwnLeaf returns this member's leaf index.
func (g *Group) OwnLeaf() LeafIndex { return g.priv.leaf }

// Removed reports whether a Commit removed this member from the group.
func (g *Group) Removed() bool { return g.removed }

// EpochAuthenticator returns the epoch_authenticator of the current epoch.
func (g *Group) EpochAuthenticator() []byte { return clone(g.secrets.authenticator) }

// Extensions returns the group context extensions: the ones the creator
// set and GroupContextExtensions proposals changed since. An application
// may keep its own data here (a group name, say) under an extension type
// of the private range (0xF000–0xFFFF) that every member's capabilities
// list (LeafOptions.ExtensionTypes).
func (g *Group) Extensions() Extensions { return append(Extensions(nil), g.ctx.Extensions...) }

// Export derives an exported secret (MLS-Exporter, RFC 9420 §8.5).
func (g *Group) Export(label string, context []byte, length int) ([]byte, error) {
	return exportSecret(g.suite, g.secrets.exporter, label, context, length)
}

// Member is one member of a group.
type Member struct {
	Leaf         LeafIndex
	Credential   Credential
	SignatureKey []byte
}

// Identity returns the identity of a BasicCredential (nil for other
// credential types). In this project it is the member's 32-byte Ed25519
// identity key, which is also its SignatureKey.
func (m Member) Identity() []byte {
	if m.Credential.Type != CredentialTypeBasic {
		return nil
	}
	return m.Credential.Identity
}

func memberOf(l LeafIndex, n *LeafNode) Member {
	return Member{Leaf: l, Credential: n.Credential.clone(), SignatureKey: clone(n.SignatureKey)}
}

// Members lists the group's members in leaf order.
func (g *Group) Members() []Member {
	var out []Member
	g.tree.members(func(l LeafIndex, n *LeafNode) { out = append(out, memberOf(l, n)) })
	return out
}

// Member returns the member at leaf l.
func (g *Group) Member(l LeafIndex) (Member, bool) {
	n := g.tree.leaf(l)
	if n == nil {
		return Member{}, false
	}
	return memberOf(l, n), true
}

// Proposals lists the proposals of the current epoch that a Commit may
// name by reference — received from other members or sent by this one —
// oldest first.
func (g *Group) Proposals() []ProposalEntry {
	out := make([]ProposalEntry, len(g.proposals))
	for i, p := range g.proposals {
		out[i] = p.clone()
	}
	return out
}

// DropProposal removes a cached proposal, e.g. one the application's
// policy refuses; a Commit that names it is then rejected with
// ErrUnknownProposal. It reports whether the proposal was cached.
func (g *Group) DropProposal(ref []byte) bool {
	for i, p := range g.proposals {
		if bytes.Equal(p.Ref, ref) {
			g.proposals = append(g.proposals[:i:i], g.proposals[i+1:]...)
			return true
		}
	}
	return false
}

// ReInit returns the ReInit proposal a Commit of this group applied, if
// any: the group must not be used further and waits for its successor.
func (g *Group) ReInit() *ReInitProposal { return g.reinit }

// RatchetTree returns the public ratchet tree, as the ratchet_tree
// extension carries it.
func (g *Group) RatchetTree() RatchetTree { return g.tree.export() }

// resumptionSecret returns the resumption PSK of one of this group's
// epochs that is still kept.
func (g *Group) resumptionSecret(epoch uint64) ([]byte, bool) {
	for _, r := range g.resumption {
		if r.epoch == epoch {
			return r.secret, true
		}
	}
	return nil, false
}

// rememberResumption records the current epoch's resumption PSK, dropping
// the oldest beyond the configured history.
func (g *Group) rememberResumption() {
	g.resumption = append(g.resumption, resumptionPSK{epoch: g.ctx.Epoch, secret: clone(g.secrets.resumption)})
	if over := len(g.resumption) - g.cfg.resumptionHistory(); over > 0 {
		for _, r := range g.resumption[:over] {
			wipe(r.secret)
		}
		g.resumption = append([]resumptionPSK(nil), g.resumption[over:]...)
	}
}

// resolvePSKs returns the secrets of the PSKs named by ids, in order.
func (g *Group) resolvePSKs(ids []PreSharedKeyID) ([]pskInput, error) {
	out := make([]pskInput, 0, len(ids))
	for _, id := range ids {
		var secret []byte
		var ok bool
		switch id.Type {
		case PSKTypeExternal:
			if g.cfg.PSKs != nil {
				secret, ok = g.cfg.PSKs.ExternalPSK(id.PSKID)
			}
		case PSKTypeResumption:
			// A reinit or branch PSK names the predecessor, whose epochs
			// are not this group's even when the group ID is the same.
			if id.Usage == ResumptionPSKUsageApplication && bytes.Equal(id.PSKGroupID, g.ctx.GroupID) {
				secret, ok = g.resumptionSecret(id.PSKEpoch)
			} else if g.cfg.PSKs != nil {
				secret, ok = g.cfg.PSKs.ResumptionPSK(id.PSKGroupID, id.PSKEpoch)
			}
		}
		if !ok {
			return nil, fmt.Errorf("%w: type %d", ErrUnknownPSK, id.Type)
		}
		out = append(out, pskInput{id: id, secret: secret})
	}
	return out, nil
}

// leafCheck returns the context for validating a leaf in this group's
// current state, against tree t.
func (g *Group) leafCheck(t *ratchetTree, ext Extensions, source LeafNodeSource, leaf LeafIndex, replaces int64) *leafCheck {
	return &leafCheck{
		suite: g.suite, groupID: g.ctx.GroupID, extensions: ext, tree: t,
		now: g.cfg.now(), source: source, leaf: leaf, replaces: replaces,
		credential: g.cfg.ValidateCredential,
	}
}
