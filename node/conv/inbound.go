package conv

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/internal/chanid"
	"github.com/quicproquo/qpq/mls"
	"github.com/quicproquo/qpq/node/history"
	"github.com/quicproquo/qpq/node/payload"
	"github.com/quicproquo/qpq/rpc/errcode"
)

// Handle processes one MLS message (the plaintext of a sealed envelope)
// that reached this node by via ("direct" or "server"). It returns an
// error only when the outcome could not be stored: the caller keeps the
// message in its inbox and tries again. Messages that are malformed,
// forged, duplicates or not for this node are dropped, and nil returned.
func (m *Manager) Handle(via string, data []byte) error {
	if len(via) > maxViaSize {
		return fmt.Errorf("%w: via of %d bytes", ErrInvalid, len(via))
	}
	msg, err := mls.DecodeMLSMessage(data)
	if err != nil {
		m.log.Info("dropping an undecodable MLS message", "via", via, "err", err)
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch msg.WireFormat {
	case mls.WireFormatWelcome:
		return m.joinLocked(msg.Welcome)
	case mls.WireFormatPublicMessage, mls.WireFormatPrivateMessage:
		gid := groupID(msg)
		c := m.convs[string(gid)]
		if c == nil || c.g == nil {
			return m.deferLocked(gid, via, data, "group not joined yet")
		}
		advanced, err := m.processLocked(c, msg, data, via, nil)
		if err != nil || !advanced {
			return err
		}
		return m.retryDeferredLocked(c)
	}
	m.log.Info("dropping an MLS message that is not for a group", "via", via, "wire_format", msg.WireFormat)
	return nil
}

func groupID(msg *mls.MLSMessage) []byte {
	if msg.PublicMessage != nil {
		return msg.PublicMessage.Content.GroupID
	}
	return msg.PrivateMessage.GroupID
}

func contentType(msg *mls.MLSMessage) mls.ContentType {
	if msg.PublicMessage != nil {
		return msg.PublicMessage.Content.ContentType
	}
	return msg.PrivateMessage.ContentType
}

// joinLocked joins the group of a Welcome addressed to one of this node's
// KeyPackages.
func (m *Manager) joinLocked(w *mls.Welcome) error {
	b, ref, place, ok, err := m.cfg.Keys.ForWelcome(w)
	if err != nil {
		return err
	}
	if !ok {
		m.log.Debug("dropping a Welcome for no KeyPackage of ours (a copy of one used already?)")
		return nil
	}
	g, err := mls.JoinWelcome(w, b, nil, m.mlsCfg)
	if err != nil {
		m.log.Info("dropping a Welcome that does not join", "err", err)
		return nil
	}
	id := g.GroupID()
	c := &conv{id: id, record: record{status: StatusActive}, g: g}
	data, found := g.Extensions().Find(ExtensionType)
	info, err := ParseInfo(data)
	if !found || err != nil {
		m.log.Info("dropping a Welcome to a group that does not say what it is", "group", short(id), "err", err)
		return nil
	}
	c.kind, c.name = info.Kind, info.Name
	if c.kind == KindDirect {
		if c.peer, err = m.dmPeer(g); err != nil {
			m.log.Warn("dropping a Welcome to a malformed DM", "group", short(id), "err", err)
			return nil
		}
	}
	consume := func(tx *bolt.Tx) error { return m.cfg.Keys.ConsumeTx(tx, ref) }
	if old := m.convs[string(id)]; old != nil && old.status == StatusActive && (old.kind != KindDirect || old.liveDM()) {
		// Already in it: nothing to join; the KeyPackage is spent anyway.
		m.log.Info("ignoring a Welcome to a group this node is in", "group", short(id))
		return m.db.Update(consume)
	}
	if len(id) > 255 {
		m.log.Info("dropping a Welcome to a group with an overlong id", "len", len(id))
		return nil
	}
	m.convs[string(id)] = c
	if err := m.update(c, consume); err != nil {
		return err
	}
	m.log.Debug("joined", "group", short(id), "kind", c.kind, "epoch", g.Epoch())
	m.changedLocked(c)
	m.cfg.OnEvent(KeyPackageUsed{Place: place})
	return m.retryDeferredLocked(c)
}

// dmPeer checks a DM's shape: two members, this node one of them, the
// group id their channel id. It returns the other member.
func (m *Manager) dmPeer(g *mls.Group) (ed25519.PublicKey, error) {
	mems := g.Members()
	if len(mems) != 2 {
		return nil, fmt.Errorf("%d members", len(mems))
	}
	peer := mems[0].Identity()
	if bytes.Equal(peer, m.self) {
		peer = mems[1].Identity()
	}
	want := chanid.Derive(m.self, peer)
	if bytes.Equal(peer, m.self) || !bytes.Equal(g.GroupID(), want[:]) {
		return nil, errors.New("group id is not the channel id of its members")
	}
	return bytes.Clone(peer), nil
}

// processLocked processes a group message for c. deferredKey is the
// message's key in node.deferred when it is being retried from there; it
// is deleted once the message is done with. advanced reports a Commit that
// moved the group to a new epoch.
func (m *Manager) processLocked(c *conv, msg *mls.MLSMessage, raw []byte, via string, deferredKey []byte) (advanced bool, err error) {
	done := func() (bool, error) {
		if deferredKey == nil {
			return false, nil
		}
		return false, m.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketDeferred).Delete(deferredKey) })
	}
	isCommit := contentType(msg) == mls.ContentTypeCommit
	if isCommit && c.seenCommit(raw) {
		return done()
	}
	rec, err := c.g.Process(msg)
	if err != nil {
		switch {
		case errors.Is(err, mls.ErrFutureEpoch):
			if deferredKey == nil {
				return false, m.deferLocked(c.id, via, raw, "later epoch")
			}
			return false, nil // stays deferred
		case errors.Is(err, mls.ErrReplay), errors.Is(err, mls.ErrOwnMessage),
			errors.Is(err, mls.ErrStaleProposal), errors.Is(err, mls.ErrRemoved),
			errors.Is(err, mls.ErrGenerationTooOld):
			m.log.Debug("dropping a duplicate or void message", "conv", short(c.id), "via", via, "err", err)
		case errors.Is(err, mls.ErrStaleCommit):
			m.log.Warn("conflicting commit ignored; the first one processed stands", "conv", short(c.id), "epoch", c.g.Epoch(), "err", err)
			m.problemLocked(c, errcode.FailedPrecondition, fmt.Sprintf(
				"a conflicting change to this conversation was ignored: another change to epoch %d was applied first", c.g.Epoch()-1))
		case errors.Is(err, mls.ErrEpochExpired):
			m.log.Warn("message too late to decrypt", "conv", short(c.id), "via", via, "err", err)
			m.problemLocked(c, errcode.FailedPrecondition, "a message arrived too late to be decrypted (its epoch's keys are gone)")
		default:
			m.log.Info("dropping a message that fails MLS checks", "conv", short(c.id), "via", via, "err", err)
		}
		return done()
	}

	var events []Event
	err = m.update(c, func(tx *bolt.Tx) error {
		if deferredKey != nil {
			if err := tx.Bucket(bucketDeferred).Delete(deferredKey); err != nil {
				return err
			}
		}
		switch {
		case rec.Commit != nil:
			return m.appliedCommitTx(tx, c, rec.Commit, raw)
		case rec.ApplicationData != nil:
			ev, err := m.receivedTx(tx, c, rec, via)
			if ev != nil {
				events = append(events, ev)
			}
			return err
		}
		return nil // a proposal: cached in the state saved
	})
	if err != nil {
		return false, err
	}
	for _, ev := range events {
		m.cfg.OnEvent(ev)
	}
	switch {
	case rec.Commit != nil:
		m.log.Debug("commit applied", "conv", short(c.id), "epoch", c.g.Epoch(), "via", via)
		m.changedLocked(c)
		m.kickLocked(c)
		return true, nil
	case rec.Proposal != nil:
		m.kickLocked(c)
	}
	return false, nil
}

// appliedCommitTx records the effects of another member's Commit.
func (m *Manager) appliedCommitTx(tx *bolt.Tx, c *conv, res *mls.CommitResult, raw []byte) error {
	c.addCommit(raw)
	if res.RemovedSelf {
		c.status = StatusRemoved
		own := c.g.OwnLeaf()
		for _, p := range res.Proposals {
			if r, ok := p.Proposal.(*mls.RemoveProposal); ok && r.Removed == own &&
				p.Sender == (mls.Sender{Type: mls.SenderTypeMember, Index: uint32(own)}) {
				c.status = StatusLeft
			}
		}
		return m.dropHeldTx(tx, c)
	}
	members := c.g.Members()
	for _, p := range res.Retry {
		// Proposed again in the new epoch; one that no longer fits (an
		// Add of someone who joined meanwhile) is let go.
		var msg *mls.MLSMessage
		var err error
		if _, isUpdate := p.(*mls.UpdateProposal); isUpdate {
			msg, _, err = c.g.ProposeUpdate(mls.WireFormatPublicMessage)
		} else {
			msg, _, err = c.g.Propose(p, mls.WireFormatPublicMessage)
		}
		if err != nil {
			m.log.Info("not proposing again", "conv", short(c.id), "err", err)
			continue
		}
		if err := m.enqueueTx(tx, c, members, msg.Encode(), payload.ID{}); err != nil {
			return err
		}
	}
	return m.flushHeldTx(tx, c)
}

// receivedTx stores a received application message; it returns the event
// to report, if any.
func (m *Manager) receivedTx(tx *bolt.Tx, c *conv, rec *mls.Received, via string) (Event, error) {
	p, err := payload.Parse(rec.ApplicationData)
	if err != nil {
		m.log.Info("dropping an application message with a bad payload", "conv", short(c.id), "err", err)
		return nil, nil
	}
	if len(rec.SignatureKey) != history.SenderSize {
		return nil, nil
	}
	switch p.Type {
	case payload.TypeText:
		hm := history.Message{Conversation: c.id, ID: p.ID, Text: p.Text(), Time: p.Time, Via: via}
		copy(hm.Sender[:], rec.SignatureKey)
		seq, dup, err := m.cfg.History.AppendTx(tx, hm)
		if err != nil || dup {
			return nil, err
		}
		hm.Seq = seq
		return Received{Message: hm}, nil
	case payload.TypeReceipt:
		return nil, nil // not shown
	}
	return Problem{Conversation: bytes.Clone(c.id), Code: errcode.FailedPrecondition,
		Text: fmt.Sprintf("a message of a kind this version cannot show (%s)", p.Type)}, nil
}

// deferLocked keeps a message of a later epoch or an unknown group.
func (m *Manager) deferLocked(gid []byte, via string, data []byte, why string) error {
	if len(gid) == 0 || len(gid) > 255 {
		return nil
	}
	var kept bool
	err := m.db.Update(func(tx *bolt.Tx) error {
		var err error
		kept, err = putSeq(tx, bucketDeferred, gid, encodeDeferred(m.cfg.Now(), via, data), MaxDeferredPerGroup, MaxDeferredTotal)
		return err
	})
	switch {
	case err != nil:
		return err
	case !kept:
		m.log.Warn("dropping a message: too many kept for later", "group", short(gid), "why", why)
	default:
		m.log.Debug("message kept for later", "group", short(gid), "why", why, "via", via)
	}
	return nil
}

// retryDeferredLocked processes again the messages kept for c, oldest
// first, starting over after each one that advances the epoch.
func (m *Manager) retryDeferredLocked(c *conv) error {
	for {
		var ds []deferred
		err := m.db.View(func(tx *bolt.Tx) error {
			keys, vals := listPrefix(tx, bucketDeferred, groupPrefix(c.id))
			for i := range keys {
				d, err := decodeDeferred(keys[i], vals[i])
				if err != nil {
					d = deferred{key: keys[i]} // deleted below
				}
				ds = append(ds, d)
			}
			return nil
		})
		if err != nil || len(ds) == 0 {
			return err
		}
		progress := false
		for _, d := range ds {
			cur := m.convs[string(c.id)]
			if cur == nil || cur.g == nil {
				return nil
			}
			c = cur
			msg, derr := mls.DecodeMLSMessage(d.data)
			if derr != nil || m.cfg.Now().Sub(d.received) > MaxDeferredAge {
				if err := m.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketDeferred).Delete(d.key) }); err != nil {
					return err
				}
				continue
			}
			advanced, err := m.processLocked(c, msg, d.data, d.via, d.key)
			if err != nil {
				return err
			}
			if advanced {
				progress = true
				break
			}
		}
		if !progress {
			return nil
		}
	}
}

// sweepDeferredLocked drops kept messages older than MaxDeferredAge (of
// groups never joined, say).
func (m *Manager) sweepDeferredLocked() {
	err := m.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDeferred)
		var old [][]byte
		b.ForEach(func(k, v []byte) error {
			d, err := decodeDeferred(k, v)
			if err != nil || m.cfg.Now().Sub(d.received) > MaxDeferredAge {
				old = append(old, bytes.Clone(k))
			}
			return nil
		})
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		m.log.Error("sweeping kept messages", "err", err)
	}
}
