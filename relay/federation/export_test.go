package federation

import (
	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/schema/fedschema"
)

// SetLoseAnswer lets tests lose the answers of committed deliveries
// (nil: none).
func SetLoseAnswer(f func() bool) { loseAnswer = f }

// ServiceHook is the FederationService f serves to peer once its
// certificate is admitted (a new one for each connection).
func ServiceHook(f *Federation, peer string) capnp.ClientHook {
	return fedschema.FederationService_NewServer(&service{f: f, peer: peer})
}
