package federation

import (
	"bytes"

	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/relay/wire"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema/fedschema"
)

// The decoders of this file turn a call's Cap'n Proto parameters, bytes
// from another server, into checked Go values. Every field is bounded:
// keys 32 bytes, a relay stream 16, a payload 1 to MaxPayload bytes, 1 to
// MaxBatch recipients, usernames by auth.MaxUsernameSize (checked by the
// handler), origin a domain, hops 1 to MaxHops.

// Request is what every call carries.
type Request struct {
	// Origin is the calling server's domain, already checked against
	// the connection's certificate.
	Origin string
	// Hops is how many servers the request has passed, this call
	// included (1 from the server that sent it first).
	Hops int
}

// Relay is a delivery a peer relays here.
type Relay struct {
	Request
	Stream  [store.StreamSize]byte
	Seq     uint64
	From    store.Key
	To      []store.Key
	Channel store.ChannelID
	Payload []byte
}

// limits are the bounds the decoders check.
type limits struct {
	maxHops, maxPayload, maxBatch int
}

// request reads origin and hops; peer is the domain the connection's
// certificate is pinned for.
func (l limits) request(peer string, origin func() (string, error), hops uint8) (Request, error) {
	o, err := origin()
	if err != nil {
		return Request{}, wire.Unreadable("origin")
	}
	if err := CheckDomain(o); err != nil {
		return Request{}, errcode.Errorf(errcode.InvalidArgument, "origin: %v", err)
	}
	if o != peer {
		// Unauthenticated, not permission-denied: the sender retries
		// (a configuration to fix) rather than dropping deliveries.
		return Request{}, errcode.Errorf(errcode.Unauthenticated, "origin %s does not match %s, the domain this server pinned your certificate for", o, peer)
	}
	switch {
	case hops == 0:
		return Request{}, errcode.New(errcode.InvalidArgument, "hops is 0; the first server sends 1")
	case int(hops) > l.maxHops:
		return Request{}, errHopLimit(l.maxHops)
	}
	return Request{Origin: o, Hops: int(hops)}, nil
}

func errHopLimit(max int) error {
	return errcode.Errorf(errcode.FailedPrecondition, "hop limit of %d reached: the request went round the federation (a routing loop?)", max)
}

// relayParams are the fields relayEnqueue and relayBatchEnqueue share.
type relayParams interface {
	Origin() (string, error)
	Hops() uint8
	Relay() (fedschema.RelayId, error)
	SenderKey() ([]byte, error)
	Payload() ([]byte, error)
	ChannelId() ([]byte, error)
}

func (l limits) relay(peer string, p relayParams, to []store.Key) (Relay, error) {
	req, err := l.request(peer, p.Origin, p.Hops())
	if err != nil {
		return Relay{}, err
	}
	r := Relay{Request: req, To: to}
	id, err := p.Relay()
	if err != nil {
		return Relay{}, wire.Unreadable("relay")
	}
	stream, err := id.Stream()
	if err != nil {
		return Relay{}, wire.Unreadable("relay.stream")
	}
	if len(stream) != store.StreamSize {
		return Relay{}, errcode.Errorf(errcode.InvalidArgument, "relay.stream is %d bytes; it is %d", len(stream), store.StreamSize)
	}
	copy(r.Stream[:], stream)
	if r.Seq = id.Seq(); r.Seq == 0 {
		return Relay{}, errcode.New(errcode.InvalidArgument, "relay.seq is 0; queues count from 1")
	}
	if r.From, err = wire.Key("senderKey", p.SenderKey); err != nil {
		return Relay{}, err
	}
	if r.Channel, err = wire.Channel(p.ChannelId); err != nil {
		return Relay{}, err
	}
	if r.Payload, err = wire.Payload(p.Payload, l.maxPayload); err != nil {
		return Relay{}, err
	}
	r.Payload = bytes.Clone(r.Payload) // the call's message is released after the reply
	return r, nil
}

// relayOne reads relayEnqueue's parameters.
func (l limits) relayOne(peer string, p fedschema.FederationService_relayEnqueue_Params) (Relay, error) {
	to, err := wire.Key("recipientKey", p.RecipientKey)
	if err != nil {
		return Relay{}, err
	}
	return l.relay(peer, p, []store.Key{to})
}

// relayBatch reads relayBatchEnqueue's parameters.
func (l limits) relayBatch(peer string, p fedschema.FederationService_relayBatchEnqueue_Params) (Relay, error) {
	to, err := wire.Recipients(p.RecipientKeys, l.maxBatch)
	if err != nil {
		return Relay{}, err
	}
	return l.relay(peer, p, to)
}
