package cipher

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha512"
	"fmt"

	"github.com/cloudflare/circl/dh/x448"
	circlhpke "github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"
)

// x448HPKE is HPKE base mode with DHKEM(X448, HKDF-SHA512) (KEM 0x0021),
// HKDF-SHA512 and the given AEAD, from circl: crypto/hpke has no X448 and
// its KEM interface cannot be implemented outside the standard library.
//
// Keys are the raw 56-byte strings of RFC 7748. DeriveKeyPair is our own,
// because circl's accepts only a 56-byte seed while MLS derives node keys
// from 64-byte secrets and RFC 9180 §7.1.3 takes ikm of any length.
type x448HPKE struct {
	aead circlhpke.AEAD
}

var _ hpkeScheme = x448HPKE{}

const (
	x448KEMID = 0x0021 // DHKEM(X448, HKDF-SHA512), RFC 9180 §7.1
	x448Nsk   = x448.Size
	// x448MaxExport is RFC 9180's bound on an export: 255*Nh of HKDF-SHA512.
	x448MaxExport = 255 * sha512.Size
)

func (h x448HPKE) suite() circlhpke.Suite {
	return circlhpke.NewSuite(circlhpke.KEM_X448_HKDF_SHA512, circlhpke.KDF_HKDF_SHA512, h.aead)
}

func (x448HPKE) scheme() kem.Scheme { return circlhpke.KEM_X448_HKDF_SHA512.Scheme() }

func (h x448HPKE) generate() ([]byte, []byte, error) {
	_, sk, err := h.scheme().GenerateKeyPair()
	if err != nil {
		return nil, nil, err
	}
	return x448KeyPair(sk)
}

// derive is DeriveKeyPair of RFC 9180 §7.1.3 for X448:
//
//	dkp_prk = LabeledExtract("", "dkp_prk", ikm)
//	sk      = LabeledExpand(dkp_prk, "sk", "", Nsk)
//
// with suite_id = "KEM" || I2OSP(0x0021, 2).
func (h x448HPKE) derive(ikm []byte) ([]byte, []byte, error) {
	suiteID := []byte{'K', 'E', 'M', x448KEMID >> 8, x448KEMID & 0xff}
	labeled := func(label string) []byte {
		return append(append([]byte("HPKE-v1"), suiteID...), label...)
	}
	prk, err := hkdf.Extract(sha512.New, append(labeled("dkp_prk"), ikm...), nil)
	if err != nil {
		return nil, nil, err
	}
	info := append([]byte{0, x448Nsk}, labeled("sk")...)
	sk, err := hkdf.Expand(sha512.New, prk, string(info), x448Nsk)
	if err != nil {
		return nil, nil, err
	}
	k, err := h.private(sk)
	if err != nil {
		return nil, nil, err
	}
	return x448KeyPair(k)
}

// x448KeyPair serializes a key pair. SerializePrivateKey clamps its output
// (RFC 9180 §7.1.2), as crypto/hpke does for X25519; the clamped key is the
// same X448 key.
func x448KeyPair(sk kem.PrivateKey) ([]byte, []byte, error) {
	priv, err := sk.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	priv[0] &= 252
	priv[x448Nsk-1] |= 128
	pub, err := sk.Public().MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	return priv, pub, nil
}

func (h x448HPKE) private(priv []byte) (kem.PrivateKey, error) {
	k, err := h.scheme().UnmarshalBinaryPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: X448 private key: %v", ErrKey, err)
	}
	return k, nil
}

func (h x448HPKE) publicKey(pub []byte) (kem.PublicKey, error) {
	k, err := h.scheme().UnmarshalBinaryPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: X448 public key: %v", ErrKey, err)
	}
	return k, nil
}

func (h x448HPKE) public(priv []byte) ([]byte, error) {
	k, err := h.private(priv)
	if err != nil {
		return nil, err
	}
	return k.Public().MarshalBinary()
}

func (h x448HPKE) sender(pub, info []byte) ([]byte, circlhpke.Sealer, error) {
	pk, err := h.publicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	s, err := h.suite().NewSender(pk, info)
	if err != nil {
		return nil, nil, err
	}
	enc, sealer, err := s.Setup(rand.Reader)
	if err != nil {
		// The only DH failure is a low-order public key.
		return nil, nil, fmt.Errorf("%w: X448 public key: %v", ErrKey, err)
	}
	return enc, sealer, nil
}

func (h x448HPKE) receiver(priv, enc, info []byte) (circlhpke.Opener, error) {
	sk, err := h.private(priv)
	if err != nil {
		return nil, err
	}
	r, err := h.suite().NewReceiver(sk, info)
	if err != nil {
		return nil, err
	}
	o, err := r.Setup(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	return o, nil
}

func (h x448HPKE) seal(pub, info, pt []byte) ([]byte, []byte, error) {
	enc, s, err := h.sender(pub, info)
	if err != nil {
		return nil, nil, err
	}
	ct, err := s.Seal(pt, nil)
	if err != nil {
		return nil, nil, err
	}
	return enc, ct, nil
}

func (h x448HPKE) open(priv, enc, info, ct []byte) ([]byte, error) {
	o, err := h.receiver(priv, enc, info)
	if err != nil {
		return nil, err
	}
	pt, err := o.Open(ct, nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

func checkExportLength(n int) error {
	if n < 0 || n > x448MaxExport {
		return fmt.Errorf("cipher: HPKE export length %d out of range", n)
	}
	return nil
}

func (h x448HPKE) exportSender(pub, info, ctx []byte, n int) ([]byte, []byte, error) {
	if err := checkExportLength(n); err != nil {
		return nil, nil, err
	}
	enc, s, err := h.sender(pub, info)
	if err != nil {
		return nil, nil, err
	}
	return enc, s.Export(ctx, uint(n)), nil
}

func (h x448HPKE) exportReceiver(priv, enc, info, ctx []byte, n int) ([]byte, error) {
	if err := checkExportLength(n); err != nil {
		return nil, err
	}
	o, err := h.receiver(priv, enc, info)
	if err != nil {
		return nil, err
	}
	return o.Export(ctx, uint(n)), nil
}
