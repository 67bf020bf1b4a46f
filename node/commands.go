package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"

	"github.com/quicproquo/qpq/mls"
	"github.com/quicproquo/qpq/node/conv"
	"github.com/quicproquo/qpq/node/keys"
	"github.com/quicproquo/qpq/rpc"
)

// The commands of the REPL. Each returns an error with a stable code
// (codeOf) a caller reports as an Error event; conversation changes are
// also reported as events when they happen.

// DM opens the 1:1 conversation with user name (a Conversation event
// reports it): as its initiator (this
// node creates the MLS group, adds the peer from one of its KeyPackages
// and sends the Welcome) or, when the peer initiates, by waiting for the
// peer's Welcome. Who initiates is decided once per pair (createChannel)
// and the same over the P2P link and at the home server.
func (n *Node) DM(ctx context.Context, name string) (Conversation, error) {
	peer, err := n.resolve(ctx, name)
	if err != nil {
		return Conversation{}, err
	}
	if bytes.Equal(peer, n.self) {
		return Conversation{}, fmt.Errorf("%w: that is you", conv.ErrInvalid)
	}
	if c, ok := n.convs.Get(n.convs.DMID(peer)); ok && c.Status == conv.StatusActive && len(c.Members) == 2 {
		ev := n.convEvent(c)
		n.emit(ev) // nothing changed: say where it stands
		return ev, nil
	}
	initiator, err := n.channelRole(ctx, peer)
	if err != nil {
		return Conversation{}, err
	}
	var c conv.Conversation
	if initiator {
		kp, err := n.fetchKeyPackage(ctx, peer)
		if err != nil {
			return Conversation{}, err
		}
		c, err = n.convs.CreateDM(peer, kp)
		if err != nil {
			return Conversation{}, err
		}
	} else if c, err = n.convs.ExpectDM(peer); err != nil {
		return Conversation{}, err
	}
	return n.convEvent(c), nil
}

// channelRole returns whether this node initiates its DM with peer: the
// recorded decision, else the peer's answer over the P2P link, else the
// home server's (recorded so that the P2P link answers the same).
func (n *Node) channelRole(ctx context.Context, peer ed25519.PublicKey) (bool, error) {
	if ch, ok, err := n.pstore.Channel(peer); err != nil || ok {
		return ch.SelfInitiates, err
	}
	var errs []error
	if n.directAllowed(peer) {
		ns, pctx, cancel, err := n.peerService(ctx, peer)
		if err == nil {
			_, wasNew, err := n.psvc.OpenChannel(pctx, peer, ns)
			ns.Release()
			cancel()
			if err == nil {
				return wasNew, nil
			}
		}
		errs = append(errs, err)
	}
	if c := n.serverClient(); c != nil {
		_, wasNew, err := c.CreateChannel(ctx, peer)
		if err != nil {
			return false, err
		}
		ch, err := n.pstore.RecordChannel(n.self, peer, wasNew)
		return ch.SelfInitiates, err
	}
	return false, fmt.Errorf("%s: %w", n.nameOf(peer), errors.Join(append(errs, n.noPath())...))
}

// fetchKeyPackage gets one of peer's KeyPackages: from the peer itself,
// else from the home server.
func (n *Node) fetchKeyPackage(ctx context.Context, peer ed25519.PublicKey) (*mls.KeyPackage, error) {
	var errs []error
	if n.directAllowed(peer) {
		ns, pctx, cancel, err := n.peerService(ctx, peer)
		if err == nil {
			var raw []byte
			raw, err = rpc.NewClient(ns).FetchKeyPackage(pctx, peer)
			ns.Release()
			cancel()
			if err == nil && len(raw) > 0 {
				return keys.ParsePeerKeyPackage(raw, peer)
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if c := n.serverClient(); c != nil {
		raw, err := c.FetchKeyPackage(ctx, peer)
		if err != nil {
			return nil, err
		}
		if len(raw) > 0 {
			return keys.ParsePeerKeyPackage(raw, peer)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %w", n.nameOf(peer), errors.Join(append(errs, n.noPath())...))
	}
	return nil, fmt.Errorf("%w: %s has no KeyPackages on offer", errUnreachable, n.nameOf(peer))
}

// CreateGroup creates a group named name with this node as its only
// member.
func (n *Node) CreateGroup(name string) (Conversation, error) {
	c, err := n.convs.CreateGroup(name)
	if err != nil {
		return Conversation{}, err
	}
	return n.convEvent(c), nil
}

// Invite adds user name to the group conversation.
func (n *Node) Invite(ctx context.Context, conversation, name string) error {
	c, peer, err := n.findWithPeer(ctx, conversation, name)
	if err != nil {
		return err
	}
	if bytes.Equal(peer, n.self) {
		return fmt.Errorf("%w: you are in it already", conv.ErrExists)
	}
	kp, err := n.fetchKeyPackage(ctx, peer)
	if err != nil {
		return err
	}
	return n.convs.Invite(c.ID, kp)
}

// Remove removes user name from the conversation.
func (n *Node) Remove(ctx context.Context, conversation, name string) error {
	c, peer, err := n.findWithPeer(ctx, conversation, name)
	if err != nil {
		return err
	}
	return n.convs.Remove(c.ID, peer)
}

// findWithPeer returns the conversation shown as conversation and the
// identity of user name.
func (n *Node) findWithPeer(ctx context.Context, conversation, name string) (conv.Conversation, ed25519.PublicKey, error) {
	c, err := n.find(conversation)
	if err != nil {
		return conv.Conversation{}, nil, err
	}
	peer, err := n.resolve(ctx, name)
	return c, peer, err
}

// Leave leaves the conversation.
func (n *Node) Leave(conversation string) error {
	c, err := n.find(conversation)
	if err != nil {
		return err
	}
	return n.convs.Leave(c.ID)
}

// UpdateKey gives this node's leaf in the conversation a fresh key.
func (n *Node) UpdateKey(conversation string) error {
	c, err := n.find(conversation)
	if err != nil {
		return err
	}
	return n.convs.UpdateKey(c.ID)
}

// Send sends text to the conversation and returns the message id. A Sent
// event follows for each recipient once it has the message.
func (n *Node) Send(conversation, text string) (string, error) {
	c, err := n.find(conversation)
	if err != nil {
		return "", err
	}
	id, err := n.convs.Send(c.ID, text)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// Conversations lists every conversation, sorted by name.
func (n *Node) Conversations() []Conversation {
	var out []Conversation
	for _, c := range n.convs.List() {
		out = append(out, n.convEvent(c))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Conversation returns the conversation shown as name.
func (n *Node) Conversation(name string) (Conversation, error) {
	c, err := n.find(name)
	if err != nil {
		return Conversation{}, err
	}
	return n.convEvent(c), nil
}

// History returns the last max messages of the conversation, oldest first.
func (n *Node) History(conversation string, max int) ([]History, error) {
	c, err := n.find(conversation)
	if err != nil {
		return nil, err
	}
	ms, err := n.history.Last(c.ID, max)
	if err != nil {
		return nil, err
	}
	held, err := n.outbox.Undelivered(c.ID)
	if err != nil {
		return nil, err
	}
	name := n.convNameByID(c.ID)
	out := make([]History, 0, len(ms))
	for _, m := range ms {
		h := History{Conversation: name, From: n.nameOf(m.Sender[:]), ID: m.ID.String(),
			Text: m.Text, Via: m.Via, Time: m.Time}
		for _, r := range held[m.ID] {
			h.WaitingFor = append(h.WaitingFor, n.nameOf(r[:]))
		}
		out = append(out, h)
	}
	return out, nil
}

// Whoami describes this node.
func (n *Node) Whoami() Whoami {
	w := Whoami{User: n.user, Identity: hex.EncodeToString(n.self), Fingerprint: fingerprint(n.self),
		PeerID: n.host.ID().String(), Server: n.cfg.Server, Addrs: []string{}}
	for _, a := range n.host.AddrInfo().Addrs {
		w.Addrs = append(w.Addrs, a.String())
	}
	return w
}

// User returns this node's user name.
func (n *Node) User() string { return n.user }

// find returns the conversation shown as name (or whose group id starts
// with the hex after "#").
func (n *Node) find(name string) (conv.Conversation, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var base []conv.Conversation
	for id, c := range n.convCache {
		if n.convNameLocked([]byte(id)) == name {
			return c, nil
		}
		if n.baseName(c) == name {
			base = append(base, c)
		}
	}
	if len(base) == 1 {
		return base[0], nil
	}
	if len(base) > 1 {
		return conv.Conversation{}, fmt.Errorf("%w: %q names %d conversations; add the #id shown by /list", conv.ErrInvalid, name, len(base))
	}
	return conv.Conversation{}, fmt.Errorf("%w: %q", conv.ErrNotFound, name)
}
