package relay

import (
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/relay/wire"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
)

var (
	unreadable = wire.Unreadable
	keyArg     = wire.Key
	channelArg = wire.Channel
)

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
