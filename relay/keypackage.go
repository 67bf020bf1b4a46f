package relay

import (
	"bytes"
	"time"

	"github.com/quicproquo/qpq/mls"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc/errcode"
)

// Key packages are single use: fetchKeyPackage pops them. A client may
// also upload one MLS KeyPackage with the last_resort extension (RFC 9420
// §17.3, extension type 0x000A): the server keeps one per identity, the
// newest, apart from the ordinary ones, and hands it out — without
// removing it — once they are gone. So fetching a user's whole stock
// (anyone may) never stops new contacts from starting a conversation
// while the user is offline; the user replaces what was used when back.
//
// The server reads uploads only to recognise that extension: anything
// that is not a KeyPackage (TLS-encoded, or framed as an MLSMessage) is
// stored as an ordinary package, as before. A last-resort one must be a
// valid KeyPackage (signatures, distinct keys; its lifetime is the
// fetcher's to check) whose credential is the uploader's Ed25519 identity
// key, since it is served again and again.

// isLastResort reports whether pkg is a KeyPackage with the last_resort
// extension; it fails with invalid-argument for one that is not a valid
// KeyPackage of uploader.
func isLastResort(uploader store.Key, pkg []byte) (bool, error) {
	kp, err := mls.DecodeKeyPackage(pkg)
	if err != nil {
		m, merr := mls.DecodeMLSMessage(pkg)
		if merr != nil || m.WireFormat != mls.WireFormatKeyPackage {
			return false, nil // opaque to this server: an ordinary package
		}
		kp = m.KeyPackage
	}
	if !kp.Extensions.Has(mls.ExtensionTypeLastResort) {
		return false, nil
	}
	if err := mls.ValidateKeyPackage(kp, time.Time{}); err != nil {
		return false, errcode.Errorf(errcode.InvalidArgument, "last-resort package: %v", err)
	}
	cred := kp.LeafNode.Credential
	if mls.ValidateEd25519Identity(cred, kp.LeafNode.SignatureKey) != nil || !bytes.Equal(cred.Identity, uploader[:]) {
		return false, errcode.New(errcode.InvalidArgument, "last-resort package: its credential is not the uploader's Ed25519 identity key")
	}
	return true, nil
}
