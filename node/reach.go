package node

import (
	"context"
	"crypto/ed25519"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/quicproquo/qpq/node/conv"
	"github.com/quicproquo/qpq/p2p"
)

// Reaching contacts across the internet: mDNS links the LAN; for the other
// members of this node's conversations the node resolves their endpoint
// records at the home server and keeps a link to them, direct when a
// path exists and otherwise through the circuit relay of their home
// server (the record holds both kinds of address). Messages then go peer
// to peer and the home server only stores what finds no link.
const (
	// reachInterval is how often unlinked contacts are resolved again
	// (their addresses change when they move or renew a reservation).
	reachInterval = time.Minute
	// reachRetryMin is the first wait before resolving again a contact
	// that had no record.
	reachRetryMin = 2 * time.Second
	// reachTimeout bounds one resolveEndpoint call.
	reachTimeout = 5 * time.Second
)

// kickReach asks the reach loop for a pass now (after a login, or when
// a conversation's members changed).
func (n *Node) kickReach() {
	select {
	case n.reachKick <- struct{}{}:
	default:
	}
}

// reachContacts runs the passes until ctx ends. A pass that leaves a
// contact unlinked (no record yet: it may publish a moment after we
// looked) is followed by another after a backoff from reachRetryMin up
// to reachInterval; a kick starts over.
func (n *Node) reachContacts(ctx context.Context) error {
	t := time.NewTimer(reachInterval)
	defer t.Stop()
	retry := reachRetryMin
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.reachKick:
			retry = reachRetryMin
		case <-t.C:
		}
		next := reachInterval
		if n.serverClient() != nil {
			missed := false
			for _, id := range n.unreachedContacts() {
				if !n.reach(ctx, id) {
					missed = true
				}
			}
			if missed {
				next, retry = retry, min(2*retry, reachInterval)
			}
		}
		t.Reset(next)
	}
}

// unreachedContacts are the other members of active conversations that
// are not linked. Those mDNS sees are included: being seen on the LAN
// does not mean a packet gets through (client isolation on Wi-Fi).
func (n *Node) unreachedContacts() []ed25519.PublicKey {
	seen := map[string]bool{string(n.self): true}
	var out []ed25519.PublicKey
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.convCache {
		if c.Status != conv.StatusActive {
			continue // left, removed, or not joined yet
		}
		for _, m := range c.Members {
			if seen[string(m)] || n.links[string(m)] != p2p.LinkDown {
				continue
			}
			seen[string(m)] = true
			out = append(out, m)
		}
	}
	return out
}

// withRecord adds to lan (a peer's addresses as mDNS sees them, or none)
// those of identity's last endpoint record, so that neither source
// replaces the other's when it updates the link.
func (n *Node) withRecord(identity ed25519.PublicKey, lan peer.AddrInfo) peer.AddrInfo {
	n.mu.Lock()
	rec := n.records[string(identity)]
	n.mu.Unlock()
	info := peer.AddrInfo{ID: lan.ID, Addrs: slices.Clone(lan.Addrs)}
	for _, a := range rec {
		if !slices.ContainsFunc(info.Addrs, a.Equal) {
			info.Addrs = append(info.Addrs, a)
		}
	}
	return info
}

// reach resolves identity's endpoint and links to it, and reports
// whether it found one. A contact without a record (offline, or of
// another domain) stays reachable through the home server only.
func (n *Node) reach(ctx context.Context, identity ed25519.PublicKey) bool {
	ctx, cancel := context.WithTimeout(ctx, reachTimeout)
	defer cancel()
	rec, err := directory{n}.ResolveEndpoint(ctx, identity)
	if err != nil {
		n.log.Debug("resolving a contact's endpoint", "peer", n.nameOf(identity), "err", err)
		return false
	}
	if len(rec) == 0 {
		return false
	}
	info, err := p2p.DecodeEndpoint(rec, identity)
	if err != nil {
		n.log.Warn("a contact's endpoint record is invalid", "peer", n.nameOf(identity), "err", err)
		return false
	}
	n.log.Debug("linking to a contact found at the home server", "peer", n.nameOf(identity), "addrs", len(info.Addrs))
	n.mu.Lock()
	n.records[string(identity)] = info.Addrs
	n.static[info.ID] = true
	n.mu.Unlock()
	lan := peer.AddrInfo{ID: info.ID}
	if p, ok := n.mdnsPeer(identity); ok {
		lan = p.AddrInfo()
	}
	n.host.AddPeer(n.withRecord(identity, lan))
	return true
}
