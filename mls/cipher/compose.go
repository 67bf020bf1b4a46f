package cipher

import (
	"crypto"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
)

// The building blocks a composed suite is made of. Each is stateless and
// safe for concurrent use.

// hpkeScheme is RFC 9180 base mode for one (KEM, KDF, AEAD) triple.
type hpkeScheme interface {
	generate() (priv, pub []byte, err error)
	derive(ikm []byte) (priv, pub []byte, err error)
	public(priv []byte) ([]byte, error)
	seal(pub, info, pt []byte) (enc, ct []byte, err error)
	open(priv, enc, info, ct []byte) ([]byte, error)
	exportSender(pub, info, exporterContext []byte, n int) (enc, secret []byte, err error)
	exportReceiver(priv, enc, info, exporterContext []byte, n int) ([]byte, error)
}

// aeadScheme is the AEAD used for message protection.
type aeadScheme interface {
	keySize() int
	nonceSize() int
	new(key []byte) (cipher.AEAD, error)
}

// sigScheme is a signature algorithm.
type sigScheme interface {
	generate() (Signer, error)
	load(priv []byte) (Signer, error)
	// parse decodes a public key; a malformed one is ErrKey.
	parse(pub []byte) (VerificationKey, error)
}

// oneShot is a sigScheme with a quicker way to check a single signature
// than parsing the key.
type oneShot interface {
	verify(pub, msg, sig []byte) error
}

// composite is a Suite assembled from a hash (for HKDF, HMAC and the
// transcript hash), an HPKE scheme, an AEAD and a signature scheme.
type composite struct {
	id   ID
	name string
	hash crypto.Hash
	hpke hpkeScheme
	aead aeadScheme
	sig  sigScheme
}

var _ Suite = (*composite)(nil)

func (s *composite) ID() ID       { return s.id }
func (s *composite) Name() string { return s.name }
func (s *composite) Nh() int      { return s.hash.Size() }

func (s *composite) newHash() hash.Hash { return s.hash.New() }

func (s *composite) Hash(data []byte) []byte {
	h := s.hash.New()
	h.Write(data)
	return h.Sum(nil)
}

func (s *composite) Extract(salt, ikm []byte) []byte {
	prk, err := hkdf.Extract(s.newHash, ikm, salt)
	if err != nil {
		// crypto/hkdf fails only for FIPS-disallowed inputs, which the
		// fixed-size MLS secrets never are.
		panic("cipher: hkdf extract: " + err.Error())
	}
	return prk
}

// Expand is HKDF-Expand. Every derivation MLS makes from its secrets asks
// for at most one hash output from a key no longer than the hash block:
// that is the single HMAC block T(1) = HMAC(prk, info || 0x01), computed
// here with one-shot hashes on the stack instead of a keyed hash.Hash per
// call (the secret tree derives five such values per message).
func (s *composite) Expand(prk, info []byte, length int) ([]byte, error) {
	if out, ok := s.expandOneBlock(prk, info, length); ok {
		return out, nil
	}
	return hkdf.Expand(s.newHash, prk, string(info), length)
}

// Block sizes of the suite hashes.
const (
	sha256Block = 64
	sha512Block = 128
)

// expandOneBlock computes HKDF-Expand for length <= the hash size, when
// prk fits the hash block and info fits the stack buffer; ok is false when
// it does not apply.
func (s *composite) expandOneBlock(prk, info []byte, length int) (out []byte, ok bool) {
	block := sha256Block
	if s.hash != crypto.SHA256 {
		block = sha512Block
	}
	const maxInfo = 256
	size := s.hash.Size()
	if length < 0 || length > size || len(prk) > block || len(info) > maxInfo {
		return nil, false
	}
	// inner = H((K ^ ipad) || info || 0x01); T(1) = H((K ^ opad) || inner)
	var buf [sha512Block + maxInfo + 1]byte
	n := copy(buf[:], prk)
	for i := range block {
		buf[i] ^= 0x36
	}
	m := block + copy(buf[block:], info)
	buf[m] = 1
	inner := s.sum(buf[:m+1])
	for i := range block {
		buf[i] ^= 0x36 ^ 0x5c
	}
	copy(buf[block:], inner[:size])
	outer := s.sum(buf[:block+size])
	out = make([]byte, length)
	copy(out, outer[:])
	clear(buf[:max(n, block)+max(m+1-block, size)])
	clear(inner[:])
	clear(outer[:])
	return out, true
}

// sum is the suite hash of data, one-shot.
func (s *composite) sum(data []byte) (out [sha512.Size]byte) {
	switch s.hash {
	case crypto.SHA256:
		h := sha256.Sum256(data)
		copy(out[:], h[:])
	case crypto.SHA384:
		h := sha512.Sum384(data)
		copy(out[:], h[:])
	default:
		out = sha512.Sum512(data)
	}
	return out
}

func (s *composite) MAC(key, data []byte) []byte {
	m := hmac.New(s.newHash, key)
	m.Write(data)
	return m.Sum(nil)
}

func (s *composite) KeySize() int                            { return s.aead.keySize() }
func (s *composite) NonceSize() int                          { return s.aead.nonceSize() }
func (s *composite) NewAEAD(key []byte) (cipher.AEAD, error) { return s.aead.new(key) }

func (s *composite) GenerateKEMKey() ([]byte, []byte, error)         { return s.hpke.generate() }
func (s *composite) DeriveKEMKey(ikm []byte) ([]byte, []byte, error) { return s.hpke.derive(ikm) }
func (s *composite) KEMPublicKey(priv []byte) ([]byte, error)        { return s.hpke.public(priv) }

func (s *composite) HPKESeal(pub, info, pt []byte) ([]byte, []byte, error) {
	return s.hpke.seal(pub, info, pt)
}

func (s *composite) HPKEOpen(priv, enc, info, ct []byte) ([]byte, error) {
	return s.hpke.open(priv, enc, info, ct)
}

func (s *composite) HPKEExportSender(pub, info, ctx []byte, n int) ([]byte, []byte, error) {
	return s.hpke.exportSender(pub, info, ctx, n)
}

func (s *composite) HPKEExportReceiver(priv, enc, info, ctx []byte, n int) ([]byte, error) {
	return s.hpke.exportReceiver(priv, enc, info, ctx, n)
}

func (s *composite) GenerateSigner() (Signer, error)       { return s.sig.generate() }
func (s *composite) NewSigner(priv []byte) (Signer, error) { return s.sig.load(priv) }

func (s *composite) ParseVerificationKey(pub []byte) (VerificationKey, error) {
	return s.sig.parse(pub)
}

func (s *composite) Verify(pub, msg, sig []byte) error {
	if o, ok := s.sig.(oneShot); ok {
		return o.verify(pub, msg, sig)
	}
	k, err := s.sig.parse(pub)
	if err != nil {
		return err
	}
	return k.Verify(msg, sig)
}
