// Package seal is the hybrid sealed envelope of quicproquo: it encrypts a
// message to one recipient's post-quantum hybrid public key so that only the
// holder of the matching private key can read it.
//
// The envelope is HPKE (RFC 9180) in base mode with the ciphersuite
//
//	KEM   MLKEM768-X25519 (X-Wing, draft-ietf-hpke-pq), id 0x647a
//	KDF   HKDF-SHA256, id 0x0001
//	AEAD  ChaCha20-Poly1305, id 0x0003
//	info  "quicproquo/seal/v1", no aad
//
// and its bytes are
//
//	+---------+---------------------+----------------------------------+
//	| version | enc                 | ciphertext                       |
//	| 1 byte  | 1120 bytes          | len(plaintext) + 16 bytes (tag)  |
//	| 0x01    | ML-KEM ct || X25519 |                                  |
//	+---------+---------------------+----------------------------------+
//
// A hybrid public key is the 1216-byte X-Wing encapsulation key (ML-KEM-768
// encapsulation key || X25519 point); a private key is the 32-byte X-Wing
// seed. Both are the serializations of draft-ietf-hpke-pq, so any HPKE
// implementation of that suite interoperates.
//
// Every envelope uses a fresh ephemeral key (single-shot HPKE): seal does not
// authenticate the sender, keep state, or hide the plaintext length. In
// quicproquo the plaintext is an MLS message, which carries the sender's
// authentication; the envelope adds post-quantum confidentiality in transit
// and at the home server.
package seal

import (
	"bytes"
	"crypto/hpke"
	"crypto/subtle"
	"errors"
	"fmt"
)

// Wire constants: the layout in the package doc, one name per field.
const (
	// Version is the first byte of every envelope this package writes.
	Version byte = 0x01
	// EncSize is the length of the HPKE encapsulated key: an ML-KEM-768
	// ciphertext (1088 bytes) followed by an X25519 point (32 bytes).
	EncSize = 1120
	// TagSize is the length of the ChaCha20-Poly1305 authentication tag.
	TagSize = 16
	// Overhead is how many bytes an envelope adds to its plaintext, and so
	// the length of the shortest valid envelope (an empty plaintext).
	Overhead = 1 + EncSize + TagSize

	// PublicKeySize is the length of a serialized hybrid public key.
	PublicKeySize = 1216
	// PrivateKeySize is the length of a serialized hybrid private key (the
	// X-Wing seed from which both component keys are derived).
	PrivateKeySize = 32
)

// Limits. MaxPlaintextSize bounds what Seal accepts and Open returns, so a
// peer cannot make us allocate more than MaxSealedSize for one envelope.
const (
	MaxPlaintextSize = 1 << 20
	MaxSealedSize    = Overhead + MaxPlaintextSize
)

// Info is the HPKE info string; it binds every key derived for an envelope
// to this protocol and version.
const Info = "quicproquo/seal/v1"

// Errors. For any input bytes Open returns exactly one of ErrShort,
// ErrTooLarge, ErrVersion or ErrOpen (possibly wrapped), so callers can tell
// malformed input from a message that is not for them or was altered.
var (
	ErrShort      = errors.New("seal: envelope shorter than the minimum")
	ErrTooLarge   = errors.New("seal: message larger than the limit")
	ErrVersion    = errors.New("seal: unknown envelope version")
	ErrOpen       = errors.New("seal: cannot open envelope: not for this key, or altered")
	ErrPublicKey  = errors.New("seal: invalid hybrid public key")
	ErrPrivateKey = errors.New("seal: invalid hybrid private key")
)

var (
	kem  = hpke.MLKEM768X25519()
	kdf  = hpke.HKDFSHA256()
	aead = hpke.ChaCha20Poly1305()
)

// PublicKey is a recipient's hybrid public key. It is immutable and safe for
// concurrent use.
type PublicKey struct {
	k   hpke.PublicKey
	raw []byte // the 1216-byte serialization
}

// PrivateKey is a hybrid private key. It is immutable and safe for
// concurrent use.
type PrivateKey struct {
	k    hpke.PrivateKey
	seed []byte // the 32-byte serialization
	pub  *PublicKey
}

// GenerateKey returns a new random hybrid private key.
func GenerateKey() (*PrivateKey, error) {
	k, err := kem.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("seal: generate key: %w", err)
	}
	return newPrivateKey(k)
}

// ParsePrivateKey decodes a 32-byte private key as written by
// PrivateKey.Bytes.
func ParsePrivateKey(b []byte) (*PrivateKey, error) {
	if len(b) != PrivateKeySize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrPrivateKey, len(b), PrivateKeySize)
	}
	k, err := kem.NewPrivateKey(b)
	if err != nil {
		return nil, ErrPrivateKey
	}
	return newPrivateKey(k)
}

func newPrivateKey(k hpke.PrivateKey) (*PrivateKey, error) {
	seed, err := k.Bytes()
	if err != nil {
		return nil, fmt.Errorf("seal: serialize private key: %w", err)
	}
	pk := k.PublicKey()
	return &PrivateKey{
		k:    k,
		seed: bytes.Clone(seed),
		pub:  &PublicKey{k: pk, raw: pk.Bytes()},
	}, nil
}

// Bytes returns the 32-byte serialization of the private key. It is secret:
// store it only in a file only its owner can read.
func (k *PrivateKey) Bytes() []byte { return bytes.Clone(k.seed) }

// Public returns the public key of k.
func (k *PrivateKey) Public() *PublicKey { return k.pub }

// ParsePublicKey decodes and validates a 1216-byte hybrid public key: the
// length, the ML-KEM-768 encapsulation key (its coefficients must be reduced)
// and the X25519 point. A home server uses it to check uploadHybridKey.
func ParsePublicKey(b []byte) (*PublicKey, error) {
	if len(b) != PublicKeySize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrPublicKey, len(b), PublicKeySize)
	}
	k, err := kem.NewPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: not an ML-KEM-768 + X25519 key", ErrPublicKey)
	}
	return &PublicKey{k: k, raw: bytes.Clone(b)}, nil
}

// Bytes returns the 1216-byte serialization of the public key.
func (k *PublicKey) Bytes() []byte { return bytes.Clone(k.raw) }

// Equal reports whether k and other are the same key.
func (k *PublicKey) Equal(other *PublicKey) bool {
	return other != nil && subtle.ConstantTimeCompare(k.raw, other.raw) == 1
}

// Seal encrypts plaintext for the holder of the private key of to and returns
// the envelope bytes. Plaintexts longer than MaxPlaintextSize are refused
// with ErrTooLarge.
func Seal(to *PublicKey, plaintext []byte) ([]byte, error) {
	if to == nil {
		return nil, fmt.Errorf("%w: none given", ErrPublicKey)
	}
	if len(plaintext) > MaxPlaintextSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(plaintext), MaxPlaintextSize)
	}
	enc, s, err := hpke.NewSender(to.k, kdf, aead, []byte(Info))
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	out := make([]byte, 1, Overhead+len(plaintext))
	out[0] = Version
	out = append(out, enc...)
	ct, err := s.Seal(nil, plaintext)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return append(out, ct...), nil
}

// Open checks and decrypts an envelope with the private key k and returns
// the plaintext. It never returns a partial plaintext.
func Open(k *PrivateKey, sealed []byte) ([]byte, error) {
	switch {
	case k == nil:
		return nil, fmt.Errorf("%w: none given", ErrPrivateKey)
	case len(sealed) == 0:
		return nil, fmt.Errorf("%w: empty", ErrShort)
	case sealed[0] != Version:
		// Checked before the length so that a future version with another
		// layout is reported as what it is.
		return nil, fmt.Errorf("%w: 0x%02x, want 0x%02x", ErrVersion, sealed[0], Version)
	case len(sealed) < Overhead:
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrShort, len(sealed), Overhead)
	case len(sealed) > MaxSealedSize:
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(sealed), MaxSealedSize)
	}
	enc, ct := sealed[1:1+EncSize], sealed[1+EncSize:]
	r, err := hpke.NewRecipient(enc, k.k, kdf, aead, []byte(Info))
	if err != nil {
		// Decapsulation fails only for an X25519 point that yields the
		// all-zero secret; ML-KEM rejects implicitly, and the AEAD catches it.
		return nil, ErrOpen
	}
	pt, err := r.Open(nil, ct)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
