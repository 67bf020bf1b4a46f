package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/quicproquo/qpq/node/conv"
	"github.com/quicproquo/qpq/node/names"
	"github.com/quicproquo/qpq/node/outbox"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/p2p/mdns"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/seal"
)

// Errors of name resolution and reachability.
var (
	errNoSuchUser   = errors.New("no such user on the LAN or at the home server")
	errUnreachable  = errors.New("not reachable")
	errNoPath       = fmt.Errorf("%w: no link to the peer and no home server", errUnreachable)
	errServerDown   = fmt.Errorf("%w: no link to the peer, and the home server is not connected", errUnreachable)
	errServerSilent = fmt.Errorf("%w: no link to the peer, and the home server did not answer", errUnreachable)
)

// noPath is the error for a peer that neither a link nor the home server
// reaches now.
func (n *Node) noPath() error {
	if n.home != nil {
		return errServerDown
	}
	return errNoPath
}

// onLink tracks link states, reports them, and on a link coming up
// retries what waits for that peer and learns its name. Links to relays
// (home servers) are the host's business, not a peer the user talks to.
// It runs on the host's event goroutine and must not block.
func (n *Node) onLink(ev p2p.LinkEvent) {
	if ev.Identity == nil || n.isRelay(ev.Peer) {
		return
	}
	key := string(ev.Identity)
	n.mu.Lock()
	if ev.State == p2p.LinkDown {
		delete(n.links, key)
	} else {
		n.links[key] = ev.State
		delete(n.coolOff, key)
	}
	n.mu.Unlock()
	n.emit(Peer{User: n.nameOf(ev.Identity), Identity: hex.EncodeToString(ev.Identity), Link: ev.State.String()})
	if ev.State == p2p.LinkDown {
		return
	}
	var r [outbox.RecipientSize]byte
	copy(r[:], ev.Identity)
	n.outbox.Kick(r)
	if _, known := n.names.Name(ev.Identity); !known {
		n.learnIdentity(ev.Identity)
	}
}

func (n *Node) isRelay(id peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.relays[id]
}

// learnIdentity finds, in the background, the user name of a peer this
// node has not met (a conversation member, or a new link).
func (n *Node) learnIdentity(identity ed25519.PublicKey) {
	n.mu.Lock()
	if n.resolving[string(identity)] {
		n.mu.Unlock()
		return
	}
	n.resolving[string(identity)] = true
	n.mu.Unlock()
	n.goBackground(func(ctx context.Context) {
		defer func() {
			n.mu.Lock()
			delete(n.resolving, string(identity))
			n.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n.resolveName(ctx, identity)
	})
}

// nameWaitLimit bounds how long nameNewMembers holds up the inbox.
const nameWaitLimit = 3 * time.Second

// maxUnnamed bounds the members noted for nameNewMembers (a group's
// Welcome can introduce many at once; the rest are named in the background).
const maxUnnamed = 64

// noteUnnamed notes a member met in a conversation whose name is unknown.
func (n *Node) noteUnnamed(identity ed25519.PublicKey) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.unnamed) < maxUnnamed && !slices.ContainsFunc(n.unnamed, func(k ed25519.PublicKey) bool { return bytes.Equal(k, identity) }) {
		n.unnamed = append(n.unnamed, identity)
	}
}

// nameNewMembers resolves, before the inbox loop goes on to the next
// message, the names of members that joining or a Commit just introduced,
// so that the messages right behind a Welcome are shown under the
// sender's name rather than a fingerprint. It waits at most
// nameWaitLimit; what is still unknown then is left to learnIdentity.
func (n *Node) nameNewMembers() {
	n.mu.Lock()
	ids := n.unnamed
	n.unnamed = nil
	n.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, nameWaitLimit)
	defer cancel()
	for _, id := range ids {
		if _, known := n.names.Name(id); !known {
			n.resolveName(ctx, id)
		}
	}
}

// resolveName asks for identity's user name — the home server first (it
// answers at once, while a link that just came up may be one of two
// simultaneous connections, the one about to be closed), else the peer
// itself if linked — and binds it; the peer and the conversations with it
// are reported again under that name.
func (n *Node) resolveName(ctx context.Context, identity ed25519.PublicKey) {
	name, err := n.askName(ctx, identity)
	if err != nil || name == "" || !n.bind(name, identity) {
		return
	}
	if st := n.link(identity); st != p2p.LinkDown {
		n.emit(Peer{User: name, Identity: hex.EncodeToString(identity), Link: st.String()})
	}
	n.mu.Lock()
	var changed []conv.Conversation
	for _, c := range n.convCache {
		for _, m := range c.Members {
			if bytes.Equal(m, identity) {
				changed = append(changed, c)
				break
			}
		}
	}
	n.mu.Unlock()
	for _, c := range changed {
		n.emit(n.convEvent(c))
	}
}

func (n *Node) askName(ctx context.Context, identity ed25519.PublicKey) (string, error) {
	if c := n.serverClient(); c != nil {
		if name, err := c.ResolveIdentity(ctx, identity); err == nil && name != "" {
			return name, nil
		}
	}
	id, err := p2p.PeerID(identity)
	if err != nil || n.link(identity) == p2p.LinkDown {
		return "", n.noPath()
	}
	ns, err := n.host.NodeService(ctx, id)
	if err != nil {
		return "", err
	}
	defer ns.Release()
	return rpc.NewClient(ns).ResolveIdentity(ctx, identity)
}

// bind records a name learned from the network, or reports the conflict.
func (n *Node) bind(name string, identity ed25519.PublicKey) bool {
	err := n.names.Bind(name, identity)
	switch {
	case errors.Is(err, names.ErrConflict):
		n.mu.Lock()
		told := n.conflicts[name+"\x00"+string(identity)]
		n.conflicts[name+"\x00"+string(identity)] = true
		n.mu.Unlock()
		if told { // mDNS repeats the claim with every announcement
			return false
		}
		n.log.Warn("name claimed by another identity", "name", name, "identity", shortID(identity))
		n.emit(Error{Code: "permission-denied", Message: fmt.Sprintf(
			"%q is known as identity %s, but identity %s now claims it; keeping the first (compare fingerprints with /whoami)",
			name, n.knownFingerprint(name), fingerprint(identity))})
		return false
	case err != nil:
		n.log.Info("not binding name", "name", name, "err", err)
		return false
	}
	return true
}

func (n *Node) knownFingerprint(name string) string {
	if id, ok := n.names.Identity(name); ok {
		return fingerprint(id)
	}
	return "?"
}

// onMDNS links to peers found on the LAN while it sees them, and learns
// their names. It runs on the discovery goroutine.
func (n *Node) onMDNS(ev mdns.Event) {
	p := ev.Peer
	if bytes.Equal(p.Identity, n.self) {
		return
	}
	switch ev.Kind {
	case mdns.PeerFound, mdns.PeerUpdated:
		n.bind(p.Username, p.Identity)
		n.host.AddPeer(n.withRecord(p.Identity, p.AddrInfo()))
		if ev.Kind == mdns.PeerFound && n.link(p.Identity) == p2p.LinkDown {
			n.emit(Peer{User: n.nameOf(p.Identity), Identity: hex.EncodeToString(p.Identity), Link: "seen"})
		}
	case mdns.PeerLost:
		// Gone from the LAN: stop dialing it, unless it is reachable
		// elsewhere (given as a peer, or found through the home server).
		// Every identity ever announced would otherwise be dialed for as
		// long as the node runs.
		n.mu.Lock()
		static := n.static[p.ID]
		n.mu.Unlock()
		if !static {
			n.host.RemovePeer(p.ID)
		}
		if n.link(p.Identity) == p2p.LinkDown {
			n.emit(Peer{User: n.nameOf(p.Identity), Identity: hex.EncodeToString(p.Identity), Link: "down"})
		}
	}
}

func (n *Node) link(identity []byte) p2p.LinkState {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.links[string(identity)]
}

// mdnsPeer returns the LAN peer with identity, if mDNS sees it.
func (n *Node) mdnsPeer(identity []byte) (mdns.Peer, bool) {
	if n.disc == nil {
		return mdns.Peer{}, false
	}
	for _, p := range n.disc.Peers() {
		if bytes.Equal(p.Identity, identity) {
			return p, true
		}
	}
	return mdns.Peer{}, false
}

// AddPeer keeps a link to a peer at known addresses (besides those mDNS
// finds), as Config.Peers does.
func (n *Node) AddPeer(info peer.AddrInfo) {
	n.mu.Lock()
	n.static[info.ID] = true
	n.mu.Unlock()
	n.host.AddPeer(info)
}

// AddrInfo returns this node's P2P addresses, for a peer's AddPeer.
func (n *Node) AddrInfo() peer.AddrInfo { return n.host.AddrInfo() }

// Peers lists the peers this node sees on the LAN or is linked to.
func (n *Node) Peers() []Peer {
	seen := map[string]bool{}
	var out []Peer
	n.mu.Lock()
	for id, st := range n.links {
		seen[id] = true
		out = append(out, Peer{Identity: hex.EncodeToString([]byte(id)), Link: st.String()})
	}
	n.mu.Unlock()
	if n.disc != nil {
		for _, p := range n.disc.Peers() {
			if !seen[string(p.Identity)] {
				seen[string(p.Identity)] = true
				out = append(out, Peer{Identity: hex.EncodeToString(p.Identity), Link: "seen"})
			}
		}
	}
	for i := range out {
		id, _ := hex.DecodeString(out[i].Identity)
		out[i].User = n.nameOf(id)
	}
	return out
}

// resolve returns the identity of a user name: known already, else from
// mDNS, else from the home server (resolveUser), else from a linked peer
// of that name.
func (n *Node) resolve(ctx context.Context, name string) (ed25519.PublicKey, error) {
	if err := names.Check(name); err != nil {
		return nil, err
	}
	if id, ok := n.names.Identity(name); ok {
		return id, nil
	}
	if id, ok := n.resolveMDNS(ctx, name, 0); ok {
		return id, nil
	}
	if c := n.serverClient(); c != nil {
		id, err := c.ResolveUser(ctx, name)
		if err != nil {
			return nil, err
		}
		if len(id) == ed25519.PublicKeySize {
			if n.bind(name, id) {
				return id, nil
			}
			return nil, fmt.Errorf("%w: %q is bound to another identity here", names.ErrConflict, name)
		}
	}
	// A peer that just came up (or this node did) may not have been heard
	// yet: give mDNS a moment before giving up.
	if id, ok := n.resolveMDNS(ctx, name, mdnsGrace); ok {
		return id, nil
	}
	return nil, fmt.Errorf("%q: %w", name, errNoSuchUser)
}

// mdnsGrace is how long resolve waits for mDNS to hear of a name it does
// not know yet.
const mdnsGrace = 2 * time.Second

// resolveMDNS looks name up in the mDNS table, for up to wait.
func (n *Node) resolveMDNS(ctx context.Context, name string, wait time.Duration) (ed25519.PublicKey, bool) {
	if n.disc == nil {
		return nil, false
	}
	deadline := time.Now().Add(wait)
	for {
		for _, p := range n.disc.Peers() {
			if p.Username == name && n.bind(name, p.Identity) {
				return p.Identity, true
			}
		}
		if time.Now().After(deadline) {
			return nil, false
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// readP2PInbox processes what peers delivered over the P2P link, in seq
// order, acknowledging each batch once its outcome is on disk.
func (n *Node) readP2PInbox(ctx context.Context) error {
	const batch = 64
	failing := false // since the last message processed
	for {
		changed := n.pstore.InboxChanged()
		ds, err := n.pstore.Peek(batch)
		if err != nil {
			return err
		}
		var last uint64
		var herr error
		for _, d := range ds {
			if herr = n.handleSealed(outbox.ViaDirect, d.Payload); herr != nil {
				break
			}
			last = d.Seq
		}
		if last > 0 {
			// A failed ack (the disk full) leaves the messages to be
			// handled again, which finds them handled.
			if err := n.pstore.Ack(last); err != nil && herr == nil {
				herr = err
			}
		}
		if herr == nil {
			failing = false
		} else {
			n.log.Error("processing the P2P inbox", "err", herr)
			if !failing {
				failing = true
				n.onInboxError(herr)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			continue
		}
		if len(ds) == batch {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// handleSealed opens an envelope sealed to this node and processes the MLS
// message inside. Envelopes that do not open are dropped.
func (n *Node) handleSealed(via string, sealed []byte) error {
	pt, err := seal.Open(n.id.Hybrid(), sealed)
	if err != nil {
		n.log.Info("dropping an envelope that does not open", "via", via, "err", err)
		return nil
	}
	err = n.convs.Handle(via, pt)
	n.nameNewMembers()
	return err
}
