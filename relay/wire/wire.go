// Package wire reads the arguments the home server's Cap'n Proto services
// share (NodeService for clients, FederationService for other servers):
// identity keys and channel ids, with the errcode errors the protocol
// promises for malformed ones. It holds no policy: who may name which key
// is the services' business.
package wire

import (
	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc/errcode"
)

// Unreadable reports a field the Cap'n Proto decoder could not read (a
// pointer of the wrong kind, or past the traversal limit).
func Unreadable(field string) error {
	return errcode.Errorf(errcode.InvalidArgument, "%s is unreadable", field)
}

// Key reads a 32-byte identity key field.
func Key(field string, get func() ([]byte, error)) (store.Key, error) {
	b, err := get()
	if err != nil {
		return store.Key{}, Unreadable(field)
	}
	if len(b) != store.KeySize {
		return store.Key{}, errcode.Errorf(errcode.InvalidArgument, "%s is %d bytes; keys are %d", field, len(b), store.KeySize)
	}
	return store.Key(b), nil
}

// Channel reads a channelId field: empty for the default inbox, or 16
// bytes.
func Channel(get func() ([]byte, error)) (store.ChannelID, error) {
	b, err := get()
	if err != nil {
		return store.ChannelID{}, Unreadable("channelId")
	}
	switch len(b) {
	case 0:
		return store.ChannelID{}, nil
	case len(store.ChannelID{}):
		id := store.ChannelID(b)
		if id.IsZero() {
			// createChannel never makes the all-zero id; refuse it here
			// so it cannot alias the default inbox.
			return store.ChannelID{}, errcode.New(errcode.NotFound, "no such channel")
		}
		return id, nil
	default:
		return store.ChannelID{}, errcode.Errorf(errcode.InvalidArgument, "channelId is %d bytes; it is empty or 16", len(b))
	}
}

// Payload reads a payload field of 1 to max bytes.
func Payload(get func() ([]byte, error), max int) ([]byte, error) {
	p, err := get()
	if err != nil {
		return nil, Unreadable("payload")
	}
	switch {
	case len(p) == 0:
		return nil, errcode.New(errcode.InvalidArgument, "payload is empty")
	case len(p) > max:
		return nil, errcode.Errorf(errcode.ResourceExhausted, "payload of %d bytes is above the limit of %d", len(p), max)
	}
	return p, nil
}

// Recipients reads a recipientKeys field of 1 to max identity keys.
func Recipients(get func() (capnp.DataList, error), max int) ([]store.Key, error) {
	list, err := get()
	if err != nil {
		return nil, Unreadable("recipientKeys")
	}
	switch n := list.Len(); {
	case n == 0:
		return nil, errcode.New(errcode.InvalidArgument, "recipientKeys is empty")
	case n > max:
		return nil, errcode.Errorf(errcode.ResourceExhausted, "%d recipients is above the limit of %d", n, max)
	}
	to := make([]store.Key, list.Len())
	for i := range to {
		if to[i], err = Key("recipientKeys[i]", func() ([]byte, error) { return list.At(i) }); err != nil {
			return nil, err
		}
	}
	return to, nil
}
