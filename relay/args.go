package relay

import (
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
)

// unreadable reports a field the Cap'n Proto decoder could not read
// (a pointer of the wrong kind, or past the traversal limit).
func unreadable(field string) error {
	return errcode.Errorf(errcode.InvalidArgument, "%s is unreadable", field)
}

// keyArg reads a 32-byte identity key field.
func keyArg(field string, get func() ([]byte, error)) (store.Key, error) {
	b, err := get()
	if err != nil {
		return store.Key{}, unreadable(field)
	}
	if len(b) != store.KeySize {
		return store.Key{}, errcode.Errorf(errcode.InvalidArgument, "%s is %d bytes; keys are %d", field, len(b), store.KeySize)
	}
	return store.Key(b), nil
}

// ownKey reads an identity key field that must name the caller.
func ownKey(c Caller, field string, get func() ([]byte, error)) (store.Key, error) {
	k, err := keyArg(field, get)
	if err != nil {
		return store.Key{}, err
	}
	if k != c.Identity {
		return store.Key{}, errcode.Errorf(errcode.PermissionDenied, "%s is not the caller's identity", field)
	}
	return k, nil
}

// channelArg reads a channelId field: empty for the default inbox, or 16
// bytes.
func channelArg(get func() ([]byte, error)) (store.ChannelID, error) {
	b, err := get()
	if err != nil {
		return store.ChannelID{}, unreadable("channelId")
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

func versionArg(v uint16) error {
	if v != 1 {
		return errcode.Errorf(errcode.InvalidArgument, "version %d; must be 1", v)
	}
	return nil
}

// setEnvelopes writes envelopes into a result list.
func setEnvelopes(newList func(int32) (schema.Envelope_List, error), envs []store.Envelope) error {
	l, err := newList(int32(len(envs)))
	if err != nil {
		return err
	}
	for i, e := range envs {
		el := l.At(i)
		el.SetSeq(e.Seq)
		if err := el.SetData(e.Data); err != nil {
			return err
		}
	}
	return nil
}
