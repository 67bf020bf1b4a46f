// Package cipher provides the cryptographic algorithms of the MLS cipher
// suites (RFC 9420 §5.1, §17.1) behind one interface, Suite, and the
// labeled helpers the protocol builds on them (§5.1.2, §5.1.3, §5.2, §8).
//
// Suites are looked up by their registered ID. Each suite combines an HPKE
// configuration (RFC 9180 base mode: KEM, KDF, AEAD), the hash behind the
// KDF, HMAC and the transcript hash, and a signature scheme. Adding a suite
// (a post-quantum one, say) means implementing Suite, usually by composing
// the building blocks in this package, and calling Register.
//
// Key encodings are those of the MLS test vectors: HPKE public keys as
// SerializePublicKey, HPKE private keys as SerializePrivateKey, Ed25519 and
// Ed448 keys in their RFC 8032 forms, ECDSA public keys uncompressed and
// private keys as big-endian scalars. NIST-curve private keys shorter than
// their fixed length are read left-padded (some implementations, and the
// P-521 vectors, write them minimally); they are always written in full.
// ECDSA signatures are DER, as in TLS 1.3.
//
// All seven suites of RFC 9420 §17.1 are registered. X25519, the NIST
// curves, AES-GCM, SHA-2, HKDF and Ed25519 come from the standard library;
// X448 HPKE, Ed448 and the bare ChaCha20-Poly1305 AEAD (which the standard
// library keeps internal) from github.com/cloudflare/circl.
package cipher

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"sort"
	"sync"
)

// ID identifies a cipher suite on the wire (uint16 CipherSuite).
type ID uint16

// The cipher suites of RFC 9420 §17.1.
const (
	X25519_AES128GCM_SHA256_Ed25519        ID = 0x0001 // MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519
	P256_AES128GCM_SHA256_P256             ID = 0x0002 // MLS_128_DHKEMP256_AES128GCM_SHA256_P256
	X25519_CHACHA20POLY1305_SHA256_Ed25519 ID = 0x0003 // MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519
	X448_AES256GCM_SHA512_Ed448            ID = 0x0004 // MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448
	P521_AES256GCM_SHA512_P521             ID = 0x0005 // MLS_256_DHKEMP521_AES256GCM_SHA512_P521
	X448_CHACHA20POLY1305_SHA512_Ed448     ID = 0x0006 // MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448
	P384_AES256GCM_SHA384_P384             ID = 0x0007 // MLS_256_DHKEMP384_AES256GCM_SHA384_P384
)

func (id ID) String() string {
	if s, err := Lookup(id); err == nil {
		return s.Name()
	}
	return fmt.Sprintf("cipher suite 0x%04x", uint16(id))
}

// Errors.
var (
	ErrUnsupported = errors.New("cipher: unsupported cipher suite")
	ErrKey         = errors.New("cipher: malformed key")
	ErrDecrypt     = errors.New("cipher: decryption failed")
	ErrSignature   = errors.New("cipher: invalid signature")
)

// Suite is one MLS cipher suite. Implementations hold no secrets and are
// safe for concurrent use. Methods that take keys take their serialized
// form and report a malformed key as ErrKey.
type Suite interface {
	ID() ID
	Name() string

	// Hash returns the suite hash of data.
	Hash(data []byte) []byte
	// Nh is the output size of the KDF (KDF.Nh), which is also the hash size.
	Nh() int
	// Extract is KDF.Extract(salt, ikm) (HKDF-Extract).
	Extract(salt, ikm []byte) []byte
	// Expand is KDF.Expand(prk, info, length) (HKDF-Expand).
	Expand(prk, info []byte, length int) ([]byte, error)
	// MAC is the suite's HMAC of data under key.
	MAC(key, data []byte) []byte

	// KeySize and NonceSize are the AEAD's Nk and Nn.
	KeySize() int
	NonceSize() int
	// NewAEAD returns the AEAD keyed with key (KeySize bytes).
	NewAEAD(key []byte) (cipher.AEAD, error)

	// GenerateKEMKey returns a fresh HPKE key pair.
	GenerateKEMKey() (priv, pub []byte, err error)
	// DeriveKEMKey is the KEM's DeriveKeyPair(ikm).
	DeriveKEMKey(ikm []byte) (priv, pub []byte, err error)
	// KEMPublicKey returns the public key of an HPKE private key.
	KEMPublicKey(priv []byte) ([]byte, error)
	// HPKESeal is single-shot SealBase(pub, info, aad="", plaintext).
	HPKESeal(pub, info, plaintext []byte) (enc, ciphertext []byte, err error)
	// HPKEOpen is single-shot OpenBase(enc, priv, info, aad="", ciphertext);
	// a failure to decrypt is ErrDecrypt.
	HPKEOpen(priv, enc, info, ciphertext []byte) ([]byte, error)
	// HPKEExportSender runs SetupBaseS(pub, info) and exports length bytes
	// under exporterContext.
	HPKEExportSender(pub, info, exporterContext []byte, length int) (enc, secret []byte, err error)
	// HPKEExportReceiver runs SetupBaseR(enc, priv, info) and exports.
	HPKEExportReceiver(priv, enc, info, exporterContext []byte, length int) ([]byte, error)

	// GenerateSigner returns a fresh signature key.
	GenerateSigner() (Signer, error)
	// NewSigner loads a signature private key.
	NewSigner(priv []byte) (Signer, error)
	// ParseVerificationKey decodes a signature public key once, for
	// checking many signatures under it: a group keeps its members' keys
	// parsed. For Ed25519 that is the decoded curve point (a field square
	// root otherwise computed for every signature) and tables that make
	// each check about a third quicker than crypto/ed25519's, for about
	// half a check's time spent once.
	ParseVerificationKey(pub []byte) (VerificationKey, error)
	// Verify checks sig over msg under the signature public key pub; an
	// invalid signature is ErrSignature. It answers as
	// ParseVerificationKey(pub) and its Verify do, in the way quicker for
	// a single signature.
	Verify(pub, msg, sig []byte) error
}

// VerificationKey is a parsed signature public key. It is immutable and
// safe for concurrent use.
type VerificationKey interface {
	// Verify checks sig over msg; an invalid signature is ErrSignature.
	Verify(msg, sig []byte) error
}

// Signer is a loaded signature private key.
type Signer interface {
	// Sign signs msg (the whole message; hashing is the scheme's business).
	Sign(msg []byte) ([]byte, error)
	// Public returns the encoded public key.
	Public() []byte
	// Bytes returns the encoded private key, for persistence. Handle it as
	// the secret it is.
	Bytes() []byte
}

var registry struct {
	sync.RWMutex
	suites map[ID]Suite
}

// Register makes s available to Lookup. It panics if a suite with the same
// ID is registered already: suites are registered once, from init.
func Register(s Suite) {
	registry.Lock()
	defer registry.Unlock()
	if registry.suites == nil {
		registry.suites = map[ID]Suite{}
	}
	if _, dup := registry.suites[s.ID()]; dup {
		panic(fmt.Sprintf("cipher: suite 0x%04x registered twice", uint16(s.ID())))
	}
	registry.suites[s.ID()] = s
}

// Lookup returns the registered suite id, or ErrUnsupported.
func Lookup(id ID) (Suite, error) {
	registry.RLock()
	defer registry.RUnlock()
	if s, ok := registry.suites[id]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("%w: 0x%04x", ErrUnsupported, uint16(id))
}

// Registered returns the IDs of all registered suites in increasing order.
func Registered() []ID {
	registry.RLock()
	defer registry.RUnlock()
	ids := make([]ID, 0, len(registry.suites))
	for id := range registry.suites {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}
