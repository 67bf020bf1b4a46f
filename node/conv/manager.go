package conv

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/internal/chanid"
	"github.com/quicproquo/qpq/mls"
	"github.com/quicproquo/qpq/node/history"
	"github.com/quicproquo/qpq/node/keys"
	"github.com/quicproquo/qpq/node/outbox"
	"github.com/quicproquo/qpq/node/payload"
	"github.com/quicproquo/qpq/rpc/errcode"
)

// Defaults for the zero Config.
const (
	DefaultCommitDelay = 20 * time.Millisecond
	// DefaultPastEpochs is how many past epochs' application messages
	// still decrypt (mls.Config.PastEpochs): a message overtaken by up to
	// this many Commits on another path is still read.
	DefaultPastEpochs = 4
)

// ViaSent is the history's via for this node's own messages.
const ViaSent = "sent"

// Errors of the commands.
var (
	ErrNotFound  = errors.New("conv: no such conversation")
	ErrNotActive = errors.New("conv: not a member of this conversation")
	ErrNotMember = errors.New("conv: not a member of the conversation")
	ErrExists    = errors.New("conv: already exists")
	ErrInvalid   = errors.New("conv: invalid argument")
)

// Conversation is a snapshot of one conversation.
type Conversation struct {
	ID     []byte
	Kind   Kind
	Name   string            // a group's name; empty for a DM
	Peer   ed25519.PublicKey // a DM's other member
	Status Status
	Epoch  uint64
	// Members are the identity keys of the members, in leaf order, this
	// node included; empty while waiting.
	Members []ed25519.PublicKey
}

// Event is something a caller shows: Changed, Received or Problem.
type Event interface{ isEvent() }

// Changed reports a conversation that was joined, created or changed
// (members, epoch, status).
type Changed struct{ Conversation Conversation }

// Received reports a new text message (never a duplicate).
type Received struct{ Message history.Message }

// Problem reports something the user should know that is not the answer
// to a command: a conflicting Commit, a message that came too late to be
// decrypted, a message type this version cannot show.
type Problem struct {
	Conversation []byte
	Code         errcode.Code
	Text         string
}

// KeyPackageUsed reports that a Welcome consumed a KeyPackage offered at
// Place; the node offers a replacement.
type KeyPackageUsed struct{ Place keys.Place }

func (Changed) isEvent()        {}
func (Received) isEvent()       {}
func (Problem) isEvent()        {}
func (KeyPackageUsed) isEvent() {}

// Config configures a Manager. DB, Keys, Outbox and History are required.
type Config struct {
	DB      *bolt.DB
	Keys    *keys.Stock
	Outbox  *outbox.Outbox
	History *history.History
	// CommitDelay is how long the committer waits after a proposal
	// before committing (DefaultCommitDelay).
	CommitDelay time.Duration
	// PastEpochs: see DefaultPastEpochs.
	PastEpochs int
	// OnEvent receives events in order, called with the Manager's lock
	// held: it must not block or call the Manager.
	OnEvent func(Event)
	// Logger; nil discards. Never given message content or keys.
	Logger *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Manager holds the conversations. Its methods are safe for concurrent
// use; they serialize on one lock (MLS groups are not concurrent).
type Manager struct {
	cfg    Config
	db     *bolt.DB
	self   ed25519.PublicKey
	mlsCfg mls.Config
	log    *slog.Logger

	due chan struct{} // buffered(1): a committer check is due

	mu      sync.Mutex // guards the fields below and every conv
	convs   map[string]*conv
	dueSet  map[string]bool
	running bool
}

// conv is a conversation in memory; the Manager's lock guards it.
type conv struct {
	id []byte
	record
	g *mls.Group // nil while waiting
}

// New loads the conversations kept in cfg.DB.
func New(cfg Config) (*Manager, error) {
	if cfg.DB == nil || cfg.Keys == nil || cfg.Outbox == nil || cfg.History == nil {
		return nil, errors.New("conv: Config needs DB, Keys, Outbox and History")
	}
	if cfg.CommitDelay <= 0 {
		cfg.CommitDelay = DefaultCommitDelay
	}
	if cfg.PastEpochs == 0 {
		cfg.PastEpochs = DefaultPastEpochs
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(Event) {}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		cfg:    cfg,
		db:     cfg.DB,
		self:   ed25519.PublicKey(cfg.Keys.Credential().Identity),
		mlsCfg: mls.Config{PastEpochs: cfg.PastEpochs, ValidateCredential: mls.ValidateEd25519Identity},
		log:    log.With("component", "conv"),
		due:    make(chan struct{}, 1),
		convs:  make(map[string]*conv),
		dueSet: make(map[string]bool),
	}
	err := m.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketConvs, bucketDeferred, bucketHeld} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketConvs).ForEach(func(k, v []byte) error {
			c, err := m.decodeConv(k, v)
			if err != nil {
				return fmt.Errorf("conversation %x: %w", k, err)
			}
			m.convs[string(k)] = c
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("conv: %w", err)
	}
	return m, nil
}

func (m *Manager) decodeConv(k, v []byte) (*conv, error) {
	r, err := decodeRecord(v)
	if err != nil {
		return nil, err
	}
	c := &conv{id: bytes.Clone(k), record: *r}
	if len(r.state) > 0 {
		if c.g, err = mls.UnmarshalState(r.state, m.mlsCfg); err != nil {
			return nil, fmt.Errorf("%w: group state: %v", ErrCorrupt, err)
		}
	}
	c.state = nil // the group is the truth in memory
	return c, nil
}

// Run makes this node commit the proposals of the groups it is the
// committer of, CommitDelay after they arrive, and sends texts held while
// proposals were pending, until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	m.running = true
	for _, c := range m.convs {
		if c.status == StatusActive && c.g != nil {
			m.kickLocked(c)
			if len(c.g.Proposals()) == 0 && m.hasHeld(c) {
				if err := m.update(c, func(tx *bolt.Tx) error { return m.flushHeldTx(tx, c) }); err != nil {
					m.log.Error("sending held texts", "err", err)
				}
			}
		}
	}
	m.mu.Unlock()
	sweep := time.NewTicker(10 * time.Minute)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			m.mu.Lock()
			m.running = false
			m.mu.Unlock()
			return ctx.Err()
		case <-sweep.C:
			m.mu.Lock()
			m.sweepDeferredLocked()
			m.mu.Unlock()
		case <-m.due:
			t := time.NewTimer(m.cfg.CommitDelay)
			select {
			case <-ctx.Done():
				t.Stop()
				continue
			case <-t.C:
			}
			m.mu.Lock()
			for id := range m.dueSet {
				delete(m.dueSet, id)
				if c := m.convs[id]; c != nil {
					if err := m.commitIfCommitterLocked(c); err != nil {
						m.log.Error("committing proposals", "conv", short(c.id), "err", err)
						m.problemLocked(c, errcode.Internal, fmt.Sprintf("could not commit pending changes: %v", err))
					}
				}
			}
			m.mu.Unlock()
		}
	}
}

// kickLocked schedules a committer check of c.
func (m *Manager) kickLocked(c *conv) {
	m.dueSet[string(c.id)] = true
	select {
	case m.due <- struct{}{}:
	default:
	}
}

func short(id []byte) string { return fmt.Sprintf("%x", id[:min(4, len(id))]) }

// ---- snapshots ----

func (c *conv) snapshot() Conversation {
	s := Conversation{ID: bytes.Clone(c.id), Kind: c.kind, Name: c.name, Peer: bytes.Clone(c.peer), Status: c.status}
	if c.g != nil {
		s.Epoch = c.g.Epoch()
		for _, mem := range c.g.Members() {
			s.Members = append(s.Members, ed25519.PublicKey(mem.Identity()))
		}
	}
	return s
}

// List returns every conversation, DMs and groups, ordered by name then
// id (DMs have no name; the caller names them after the peer).
func (m *Manager) List() []Conversation {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Conversation, 0, len(m.convs))
	for _, c := range m.convs {
		out = append(out, c.snapshot())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return bytes.Compare(out[i].ID, out[j].ID) < 0
	})
	return out
}

// Get returns the conversation with id.
func (m *Manager) Get(id []byte) (Conversation, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.convs[string(id)]
	if c == nil {
		return Conversation{}, false
	}
	return c.snapshot(), true
}

// DMID returns the group id of the DM with peer (its channel id).
func (m *Manager) DMID(peer ed25519.PublicKey) []byte {
	id := chanid.Derive(m.self, peer)
	return id[:]
}

// ---- persistence ----

// saveTx stores c in tx.
func (m *Manager) saveTx(tx *bolt.Tx, c *conv) error {
	r := c.record
	if c.g != nil {
		r.state = c.g.MarshalState()
	}
	if len(r.state) > MaxStateSize {
		return fmt.Errorf("conv: group state of %d bytes, limit %d", len(r.state), MaxStateSize)
	}
	return tx.Bucket(bucketConvs).Put(c.id, r.encode())
}

// update runs f and stores c in one transaction. If it fails, c is
// reloaded from disk: what f's caller changed in memory (a group that
// advanced) must not outlive a failed write.
func (m *Manager) update(c *conv, f func(tx *bolt.Tx) error) error {
	err := m.db.Update(func(tx *bolt.Tx) error {
		if f != nil {
			if err := f(tx); err != nil {
				return err
			}
		}
		return m.saveTx(tx, c)
	})
	if err != nil {
		m.reloadLocked(c.id)
	}
	return err
}

// reloadLocked replaces the conversation id by its stored version.
func (m *Manager) reloadLocked(id []byte) {
	var c *conv
	err := m.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketConvs).Get(id)
		if v == nil {
			return nil
		}
		var err error
		c, err = m.decodeConv(id, v)
		return err
	})
	switch {
	case err != nil:
		m.log.Error("reloading conversation", "conv", short(id), "err", err)
	case c == nil:
		delete(m.convs, string(id))
	default:
		m.convs[string(id)] = c
	}
}

// enqueueTx queues an MLS message to each of to but this node, in tx; id
// is the payload id of an application message (zero for the rest).
func (m *Manager) enqueueTx(tx *bolt.Tx, c *conv, to []mls.Member, data []byte, id payload.ID) error {
	var items []outbox.Item
	for _, mem := range to {
		ident := mem.Identity()
		if bytes.Equal(ident, m.self) || len(ident) != outbox.RecipientSize {
			continue
		}
		it := outbox.Item{Conversation: c.id, MessageID: id, Data: data}
		copy(it.Recipient[:], ident)
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil
	}
	_, err := m.cfg.Outbox.EnqueueTx(tx, items...)
	return err
}

func (m *Manager) changedLocked(c *conv) { m.cfg.OnEvent(Changed{Conversation: c.snapshot()}) }

func (m *Manager) problemLocked(c *conv, code errcode.Code, text string) {
	var id []byte
	if c != nil {
		id = bytes.Clone(c.id)
	}
	m.cfg.OnEvent(Problem{Conversation: id, Code: code, Text: text})
}

// ---- the commit discipline ----

// committer returns the leaf that commits g's current epoch: the lowest
// member whose removal is not proposed.
func committer(g *mls.Group) (mls.LeafIndex, bool) {
	leaving := map[mls.LeafIndex]bool{}
	for _, p := range g.Proposals() {
		if r, ok := p.Proposal.(*mls.RemoveProposal); ok {
			leaving[r.Removed] = true
		}
	}
	for _, mem := range g.Members() {
		if !leaving[mem.Leaf] {
			return mem.Leaf, true
		}
	}
	return 0, false
}

func (m *Manager) isCommitter(c *conv) bool {
	l, ok := committer(c.g)
	return ok && l == c.g.OwnLeaf()
}

func (m *Manager) commitIfCommitterLocked(c *conv) error {
	if c.status != StatusActive || c.g == nil || len(c.g.Proposals()) == 0 || !m.isCommitter(c) {
		return nil
	}
	return m.commitLocked(c, nil, false)
}

// commitLocked commits c's valid cached proposals and byValue, merges the
// Commit, and in one transaction stores the new state and enqueues the
// Commit to every member of the epoch it ends and the Welcome to those it
// adds.
func (m *Manager) commitLocked(c *conv, byValue []mls.Proposal, forcePath bool) error {
	old := c.g.Members()
	pc, err := c.g.Commit(mls.CommitOptions{Proposals: byValue, ForcePath: forcePath, RatchetTreeInWelcome: true})
	if err != nil {
		return err
	}
	res, err := c.g.MergePendingCommit()
	if err != nil {
		c.g.DiscardPendingCommit()
		return err
	}
	raw := pc.Message.Encode()
	c.addCommit(raw)
	var welcome []byte
	var joiners []mls.Member
	if pc.Welcome != nil {
		welcome = (&mls.MLSMessage{Version: mls.MLS10, WireFormat: mls.WireFormatWelcome, Welcome: pc.Welcome}).Encode()
		for _, l := range res.Added {
			if mem, ok := c.g.Member(l); ok {
				joiners = append(joiners, mem)
			}
		}
	}
	err = m.update(c, func(tx *bolt.Tx) error {
		if err := m.enqueueTx(tx, c, old, raw, payload.ID{}); err != nil {
			return err
		}
		if welcome != nil {
			if err := m.enqueueTx(tx, c, joiners, welcome, payload.ID{}); err != nil {
				return err
			}
		}
		return m.flushHeldTx(tx, c)
	})
	if err != nil {
		return err
	}
	m.log.Debug("committed", "conv", short(c.id), "epoch", c.g.Epoch(), "added", len(res.Added), "removed", len(res.Removed))
	m.changedLocked(c)
	return m.retryDeferredLocked(c)
}

func (c *conv) addCommit(raw []byte) {
	c.commits = append(c.commits, sha256.Sum256(raw))
	if len(c.commits) > maxCommitHashes {
		c.commits = c.commits[len(c.commits)-maxCommitHashes:]
	}
}

func (c *conv) seenCommit(raw []byte) bool {
	h := sha256.Sum256(raw)
	for _, x := range c.commits {
		if x == h {
			return true
		}
	}
	return false
}

// proposeLocked sends p (nil: an Update of this member's leaf) to every
// other member, then checks whether this node now commits.
func (m *Manager) proposeLocked(c *conv, p mls.Proposal) error {
	var msg *mls.MLSMessage
	var err error
	if p == nil {
		msg, _, err = c.g.ProposeUpdate(mls.WireFormatPublicMessage)
	} else {
		msg, _, err = c.g.Propose(p, mls.WireFormatPublicMessage)
	}
	if err != nil {
		return err
	}
	members := c.g.Members()
	if err := m.update(c, func(tx *bolt.Tx) error {
		return m.enqueueTx(tx, c, members, msg.Encode(), payload.ID{})
	}); err != nil {
		return err
	}
	m.kickLocked(c)
	return nil
}

// changeLocked applies p: committed at once by the committer, proposed
// otherwise.
func (m *Manager) changeLocked(c *conv, p mls.Proposal) error {
	if m.isCommitter(c) {
		return m.commitLocked(c, []mls.Proposal{p}, false)
	}
	return m.proposeLocked(c, p)
}

// ---- commands ----

func (m *Manager) activeLocked(id []byte) (*conv, error) {
	c := m.convs[string(id)]
	switch {
	case c == nil:
		return nil, ErrNotFound
	case c.status != StatusActive || c.g == nil:
		return nil, fmt.Errorf("%w (%s)", ErrNotActive, c.status)
	}
	return c, nil
}

func (m *Manager) newGroup(id []byte, info Info) (*mls.Group, error) {
	ext, err := info.extension()
	if err != nil {
		return nil, err
	}
	k := m.cfg.Keys
	return mls.NewGroup(keys.Suite, id, k.Signer(), k.Credential(), k.LeafOptions(), mls.Extensions{ext}, m.mlsCfg)
}

// CreateDM creates the DM with peer as its initiator: a group whose id is
// the pair's channel id, with peer added from kp (checked by the caller to
// be peer's) and the Welcome queued to peer. A DM that exists already is
// returned as it is.
func (m *Manager) CreateDM(peer ed25519.PublicKey, kp *mls.KeyPackage) (Conversation, error) {
	if len(peer) != ed25519.PublicKeySize || bytes.Equal(peer, m.self) {
		return Conversation{}, fmt.Errorf("%w: not a peer's identity key", ErrInvalid)
	}
	id := m.DMID(peer)
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.convs[string(id)]; c.liveDM() {
		return c.snapshot(), nil
	}
	g, err := m.newGroup(id, Info{Kind: KindDirect})
	if err != nil {
		return Conversation{}, err
	}
	prev := m.convs[string(id)]
	c := &conv{id: id, record: record{kind: KindDirect, status: StatusActive, peer: bytes.Clone(peer)}, g: g}
	m.convs[string(id)] = c
	if err := m.commitLocked(c, []mls.Proposal{&mls.AddProposal{KeyPackage: *kp}}, false); err != nil {
		if prev != nil {
			m.convs[string(id)] = prev
		} else {
			m.reloadLocked(id)
		}
		return Conversation{}, err
	}
	return c.snapshot(), nil
}

// ExpectDM records that this node waits for peer's Welcome to their DM
// (the peer initiates it). A DM that exists already is returned as it is.
func (m *Manager) ExpectDM(peer ed25519.PublicKey) (Conversation, error) {
	if len(peer) != ed25519.PublicKeySize || bytes.Equal(peer, m.self) {
		return Conversation{}, fmt.Errorf("%w: not a peer's identity key", ErrInvalid)
	}
	id := m.DMID(peer)
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.convs[string(id)]; c.liveDM() || c != nil && c.status == StatusWaiting {
		return c.snapshot(), nil
	}
	c := &conv{id: id, record: record{kind: KindDirect, status: StatusWaiting, peer: bytes.Clone(peer)}}
	m.convs[string(id)] = c
	if err := m.update(c, nil); err != nil {
		return Conversation{}, err
	}
	m.changedLocked(c)
	return c.snapshot(), nil
}

// CreateGroup creates a group named name with this node as its only
// member.
func (m *Manager) CreateGroup(name string) (Conversation, error) {
	id := make([]byte, 16)
	rand.Read(id)
	g, err := m.newGroup(id, Info{Kind: KindGroup, Name: name})
	if err != nil {
		return Conversation{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := &conv{id: id, record: record{kind: KindGroup, status: StatusActive, name: name}, g: g}
	m.convs[string(id)] = c
	if err := m.update(c, nil); err != nil {
		return Conversation{}, err
	}
	m.changedLocked(c)
	return c.snapshot(), nil
}

// Invite adds the owner of kp (checked by the caller) to group id.
func (m *Manager) Invite(id []byte, kp *mls.KeyPackage) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.activeLocked(id)
	if err != nil {
		return err
	}
	if c.kind == KindDirect {
		return fmt.Errorf("%w: a DM has two members; create a group to talk with more", ErrInvalid)
	}
	if _, ok := c.leafOf(kp.LeafNode.Credential.Identity); ok {
		return fmt.Errorf("%w: already a member", ErrExists)
	}
	return m.changeLocked(c, &mls.AddProposal{KeyPackage: *kp})
}

// liveDM reports whether c is a DM this node and its peer are both in. A
// DM the peer has left is over: opening it again starts a new group (with
// the same id).
func (c *conv) liveDM() bool {
	return c != nil && c.status == StatusActive && c.g != nil && len(c.g.Members()) == 2
}

func (c *conv) leafOf(identity []byte) (mls.LeafIndex, bool) {
	for _, mem := range c.g.Members() {
		if bytes.Equal(mem.Identity(), identity) {
			return mem.Leaf, true
		}
	}
	return 0, false
}

// Remove removes the member with identity from group id (or leaves, for
// this node's own identity).
func (m *Manager) Remove(id []byte, identity ed25519.PublicKey) error {
	if bytes.Equal(identity, m.self) {
		return m.Leave(id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.activeLocked(id)
	if err != nil {
		return err
	}
	leaf, ok := c.leafOf(identity)
	if !ok {
		return ErrNotMember
	}
	return m.changeLocked(c, &mls.RemoveProposal{Removed: leaf})
}

// Leave asks the group to remove this node: a proposal of its own removal
// that the committer (never this node, then) commits. The conversation
// becomes StatusLeft when that Commit arrives; a node alone in its group
// leaves at once.
func (m *Manager) Leave(id []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.convs[string(id)]
	if c == nil {
		return ErrNotFound
	}
	if c.status == StatusWaiting || c.status == StatusActive && len(c.g.Members()) == 1 {
		c.status = StatusLeft
		if err := m.update(c, func(tx *bolt.Tx) error { return m.dropHeldTx(tx, c) }); err != nil {
			return err
		}
		m.changedLocked(c)
		return nil
	}
	if c.status != StatusActive {
		return fmt.Errorf("%w (%s)", ErrNotActive, c.status)
	}
	return m.proposeLocked(c, &mls.RemoveProposal{Removed: c.g.OwnLeaf()})
}

// UpdateKey gives this node's leaf in group id a fresh key (post-compromise
// security): a Commit with a path from the committer, an Update proposal
// from anyone else.
func (m *Manager) UpdateKey(id []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.activeLocked(id)
	if err != nil {
		return err
	}
	if m.isCommitter(c) {
		return m.commitLocked(c, nil, true)
	}
	return m.proposeLocked(c, nil)
}

// Send encrypts text for group id and queues it to every other member. It
// returns the message id; the message is in the history when Send returns.
// While proposals wait for a Commit the text is held and sent after it.
func (m *Manager) Send(id []byte, text string) (payload.ID, error) {
	p := payload.NewText(text, m.cfg.Now())
	pb, err := p.Marshal()
	if err != nil {
		return payload.ID{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.activeLocked(id)
	if err != nil {
		return payload.ID{}, err
	}
	var self [history.SenderSize]byte
	copy(self[:], m.self)
	hm := history.Message{Conversation: c.id, ID: p.ID, Sender: self, Text: text, Time: p.Time, Via: ViaSent}
	err = m.update(c, func(tx *bolt.Tx) error {
		if _, _, err := m.cfg.History.AppendTx(tx, hm); err != nil {
			return err
		}
		if len(c.g.Proposals()) > 0 {
			ok, err := putSeq(tx, bucketHeld, c.id, pb, MaxHeldPerGroup, 0)
			if err == nil && !ok {
				err = errcode.Errorf(errcode.ResourceExhausted, "%d texts already wait for the group's committer", MaxHeldPerGroup)
			}
			return err
		}
		return m.encryptTx(tx, c, pb, p.ID)
	})
	if err != nil {
		return payload.ID{}, err
	}
	return p.ID, nil
}

// encryptTx encrypts payload bytes as an application message and queues
// it to every other member.
func (m *Manager) encryptTx(tx *bolt.Tx, c *conv, pb []byte, id payload.ID) error {
	msg, err := c.g.Encrypt(pb, nil, 0)
	if err != nil {
		return err
	}
	return m.enqueueTx(tx, c, c.g.Members(), msg.Encode(), id)
}

// flushHeldTx sends c's held texts, if no proposal is pending.
func (m *Manager) flushHeldTx(tx *bolt.Tx, c *conv) error {
	if c.status != StatusActive || c.g == nil || len(c.g.Proposals()) > 0 {
		return nil
	}
	keys, vals := listPrefix(tx, bucketHeld, groupPrefix(c.id))
	for i, k := range keys {
		p, err := payload.Parse(vals[i])
		if err != nil {
			m.log.Error("dropping a corrupt held text", "conv", short(c.id), "err", err)
		} else if err := m.encryptTx(tx, c, vals[i], p.ID); err != nil {
			return err
		}
		if err := tx.Bucket(bucketHeld).Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manager) hasHeld(c *conv) bool {
	var held bool
	m.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketHeld).Cursor().Seek(groupPrefix(c.id))
		held = k != nil && bytes.HasPrefix(k, groupPrefix(c.id))
		return nil
	})
	return held
}

func (m *Manager) dropHeldTx(tx *bolt.Tx, c *conv) error {
	keys, _ := listPrefix(tx, bucketHeld, groupPrefix(c.id))
	for _, k := range keys {
		if err := tx.Bucket(bucketHeld).Delete(k); err != nil {
			return err
		}
	}
	return nil
}
