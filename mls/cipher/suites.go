package cipher

import (
	"crypto"
	"crypto/ecdh"
	"crypto/elliptic"
	"crypto/hpke"
	_ "crypto/sha256" // registers crypto.SHA256
	_ "crypto/sha512" // registers crypto.SHA384 and crypto.SHA512

	circlhpke "github.com/cloudflare/circl/hpke"
)

// The seven suites of RFC 9420 §17.1. Everything but X448, Ed448 and the
// bare ChaCha20-Poly1305 AEAD comes from the standard library.
func init() {
	Register(&composite{
		id:   X25519_AES128GCM_SHA256_Ed25519,
		name: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
		hash: crypto.SHA256,
		hpke: stdHPKE{kem: hpke.DHKEM(ecdh.X25519()), kdf: hpke.HKDFSHA256(), aead: hpke.AES128GCM()},
		aead: aesGCM{16},
		sig:  ed25519Scheme{},
	})
	Register(&composite{
		id:   P256_AES128GCM_SHA256_P256,
		name: "MLS_128_DHKEMP256_AES128GCM_SHA256_P256",
		hash: crypto.SHA256,
		hpke: stdHPKE{kem: hpke.DHKEM(ecdh.P256()), kdf: hpke.HKDFSHA256(), aead: hpke.AES128GCM(), scalarSize: 32},
		aead: aesGCM{16},
		sig:  ecdsaScheme{elliptic.P256(), crypto.SHA256},
	})
	Register(&composite{
		id:   X25519_CHACHA20POLY1305_SHA256_Ed25519,
		name: "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
		hash: crypto.SHA256,
		hpke: stdHPKE{kem: hpke.DHKEM(ecdh.X25519()), kdf: hpke.HKDFSHA256(), aead: hpke.ChaCha20Poly1305()},
		aead: chacha20Poly1305{},
		sig:  ed25519Scheme{},
	})
	Register(&composite{
		id:   X448_AES256GCM_SHA512_Ed448,
		name: "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448",
		hash: crypto.SHA512,
		hpke: x448HPKE{circlhpke.AEAD_AES256GCM},
		aead: aesGCM{32},
		sig:  ed448Scheme{},
	})
	Register(&composite{
		id:   P521_AES256GCM_SHA512_P521,
		name: "MLS_256_DHKEMP521_AES256GCM_SHA512_P521",
		hash: crypto.SHA512,
		hpke: stdHPKE{kem: hpke.DHKEM(ecdh.P521()), kdf: hpke.HKDFSHA512(), aead: hpke.AES256GCM(), scalarSize: 66},
		aead: aesGCM{32},
		sig:  ecdsaScheme{elliptic.P521(), crypto.SHA512},
	})
	Register(&composite{
		id:   X448_CHACHA20POLY1305_SHA512_Ed448,
		name: "MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448",
		hash: crypto.SHA512,
		hpke: x448HPKE{circlhpke.AEAD_ChaCha20Poly1305},
		aead: chacha20Poly1305{},
		sig:  ed448Scheme{},
	})
	Register(&composite{
		id:   P384_AES256GCM_SHA384_P384,
		name: "MLS_256_DHKEMP384_AES256GCM_SHA384_P384",
		hash: crypto.SHA384,
		hpke: stdHPKE{kem: hpke.DHKEM(ecdh.P384()), kdf: hpke.HKDFSHA384(), aead: hpke.AES256GCM(), scalarSize: 48},
		aead: aesGCM{32},
		sig:  ecdsaScheme{elliptic.P384(), crypto.SHA384},
	})
}
