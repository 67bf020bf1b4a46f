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

// Config tunes a Group. The zero value means the documented defaults.
type Config struct {
	// Ratchet bounds the out-of-order window of the secret tree.
	Ratchet RatchetConfig
	// PSKs looks up pre-shared keys this client holds; nil means none.
	PSKs PSKStore
	// ResumptionHistory is how many past epochs' resumption PSKs to keep;
	// 0 means DefaultResumptionHistory.
	ResumptionHistory int
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
	return c.ResumptionHistory
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

// cachedProposal is a proposal received in the current epoch, kept for
// Commits that name it by reference.
type cachedProposal struct {
	ref      []byte
	proposal Proposal
	sender   Sender
}

// Group is one member's view of an MLS group. It is not safe for
// concurrent use.
type Group struct {
	suite  cipher.Suite
	cfg    Config
	signer cipher.Signer

	epochState
	proposals      []cachedProposal
	pendingUpdates []nodeKey       // leaf keys of this member's Update proposals this epoch
	resumption     []resumptionPSK // newest last
	reinit         *ReInitProposal // set once a ReInit has been committed
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

// EpochAuthenticator returns the epoch_authenticator of the current epoch.
func (g *Group) EpochAuthenticator() []byte { return clone(g.secrets.authenticator) }

// Extensions returns the group context extensions.
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

// Members lists the group's members in leaf order.
func (g *Group) Members() []Member {
	var out []Member
	g.tree.members(func(l LeafIndex, n *LeafNode) {
		out = append(out, Member{Leaf: l, Credential: n.Credential, SignatureKey: clone(n.SignatureKey)})
	})
	return out
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
			if bytes.Equal(id.PSKGroupID, g.ctx.GroupID) {
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
	}
}

// memberKey returns the signature key of the member at leaf l.
func (g *Group) memberKey(t *ratchetTree, l LeafIndex) ([]byte, error) {
	n := t.leaf(l)
	if n == nil {
		return nil, fmt.Errorf("%w: leaf %d is not a member", ErrInvalidProposal, l)
	}
	return n.SignatureKey, nil
}
