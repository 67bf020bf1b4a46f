package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/node/outbox"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
	"github.com/quicproquo/qpq/seal"
)

// deliver is the outbox's Deliverer: it seals an item for its recipient
// and hands it over by the first path that works — the peer's node over
// the P2P link (an open link, or a dial to the addresses mDNS or the peer
// set), else the recipient's home server.
//
// A direct attempt is bounded by DirectTimeout; after one fails, the peer
// is reached through the home server only for DirectCoolOff, or until its
// link comes up again, so that a path that died silently (and still looks
// up until the heartbeat notices) costs one timeout, not one per message.
func (n *Node) deliver(ctx context.Context, it outbox.Item) (string, error) {
	to := ed25519.PublicKey(it.Recipient[:])
	key, err := n.hybridKey(ctx, to)
	if err != nil {
		return "", err
	}
	sealed, err := seal.Seal(key, it.Data)
	if err != nil {
		return "", outbox.Permanent(err)
	}
	if n.directAllowed(to) {
		start := time.Now()
		err := n.enqueueDirect(ctx, to, sealed)
		if err == nil {
			n.log.Debug("delivered", "to", n.nameOf(to), "via", outbox.ViaDirect, "took", time.Since(start), "seq", it.Seq)
			return outbox.ViaDirect, nil
		}
		n.log.Info("direct delivery failed; not trying it again for a while", "to", n.nameOf(to), "err", err, "seq", it.Seq)
		n.mu.Lock()
		n.coolOff[string(to)] = time.Now().Add(n.cfg.DirectCoolOff)
		n.mu.Unlock()
	}
	if c := n.serverClient(); c != nil {
		if _, err := c.Enqueue(ctx, to, nil, sealed); err != nil {
			if _, answered := errcode.Find(err); answered && !errors.Is(err, rpc.ErrDisconnected) {
				return "", err // the server's own answer (a full inbox, say)
			}
			n.log.Info("home server delivery failed", "to", n.nameOf(to), "err", err, "seq", it.Seq)
			return "", errServerSilent
		}
		n.log.Debug("delivered", "to", n.nameOf(to), "via", outbox.ViaServer, "seq", it.Seq)
		return outbox.ViaServer, nil
	}
	return "", n.noPath() // a direct attempt's own error is in the log above
}

// directAllowed reports whether a direct attempt is worth making: the peer
// is linked, or mDNS or the configuration knows where it is, and no direct
// attempt failed lately.
func (n *Node) directAllowed(to ed25519.PublicKey) bool {
	n.mu.Lock()
	until, cooling := n.coolOff[string(to)]
	linked := n.links[string(to)] != p2p.LinkDown
	n.mu.Unlock()
	if cooling && time.Now().Before(until) {
		return false
	}
	if linked {
		return true
	}
	if _, ok := n.mdnsPeer(to); ok {
		return true
	}
	id, err := p2p.PeerID(to)
	if err != nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.static[id]
}

// peerService opens the NodeService of the peer with identity over the
// P2P link (dialing if needed), bounded by DirectTimeout. The caller
// releases it.
func (n *Node) peerService(ctx context.Context, identity ed25519.PublicKey) (schema.NodeService, context.Context, context.CancelFunc, error) {
	id, err := p2p.PeerID(identity)
	if err != nil {
		return schema.NodeService{}, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.DirectTimeout)
	ns, err := n.host.NodeService(ctx, id)
	if err != nil {
		cancel()
		return schema.NodeService{}, nil, nil, err
	}
	return ns, ctx, cancel, nil
}

func (n *Node) enqueueDirect(ctx context.Context, to ed25519.PublicKey, sealed []byte) error {
	ns, ctx, cancel, err := n.peerService(ctx, to)
	if err != nil {
		return err
	}
	defer cancel()
	defer ns.Release()
	_, err = rpc.NewClient(ns).Enqueue(ctx, to, nil, sealed)
	return err
}

// hybridKey returns the X-Wing key to seal to identity: cached, else asked
// of the peer itself over the P2P link (its own answer, authenticated by
// the link), else of the home server.
func (n *Node) hybridKey(ctx context.Context, identity ed25519.PublicKey) (*seal.PublicKey, error) {
	n.mu.Lock()
	k := n.hybridKeys[string(identity)]
	n.mu.Unlock()
	if k != nil {
		return k, nil // parsed once: parsing an ML-KEM key is not free
	}
	var raw []byte
	n.db.View(func(tx *bolt.Tx) error {
		raw = append(raw, tx.Bucket(bucketHybrid).Get(identity)...)
		return nil
	})
	if raw != nil {
		k, err := seal.ParsePublicKey(raw)
		if err == nil {
			n.mu.Lock()
			n.hybridKeys[string(identity)] = k
			n.mu.Unlock()
		}
		return k, err
	}
	var errs []error
	if n.directAllowed(identity) {
		if raw, err := n.fetchHybridDirect(ctx, identity); err == nil {
			return n.storeHybrid(identity, raw)
		} else {
			errs = append(errs, err)
		}
	}
	if c := n.serverClient(); c != nil {
		raw, err := c.FetchHybridKey(ctx, identity)
		if err == nil && len(raw) > 0 {
			return n.storeHybrid(identity, raw)
		}
		if err == nil {
			err = errors.New("the home server has no hybrid key for it")
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no hybrid key for %s: %w", shortID(identity), n.noPath())
	}
	return nil, fmt.Errorf("no hybrid key for %s: %w", shortID(identity), errors.Join(errs...))
}

func (n *Node) fetchHybridDirect(ctx context.Context, identity ed25519.PublicKey) ([]byte, error) {
	ns, ctx, cancel, err := n.peerService(ctx, identity)
	if err != nil {
		return nil, err
	}
	defer cancel()
	defer ns.Release()
	return rpc.NewClient(ns).FetchHybridKey(ctx, identity)
}

func (n *Node) storeHybrid(identity ed25519.PublicKey, raw []byte) (*seal.PublicKey, error) {
	k, err := seal.ParsePublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("hybrid key of %s: %w", shortID(identity), err)
	}
	err = n.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketHybrid).Put(identity, k.Bytes()) })
	if err == nil {
		n.mu.Lock()
		n.hybridKeys[string(identity)] = k
		n.mu.Unlock()
	}
	return k, err
}
