package cipher

import (
	"crypto"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
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

func (s *composite) Expand(prk, info []byte, length int) ([]byte, error) {
	return hkdf.Expand(s.newHash, prk, string(info), length)
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
func (s *composite) Verify(pub, msg, sig []byte) error     { return s.sig.verify(pub, msg, sig) }
