package cipher

import (
	"crypto"
	"crypto/ecdh"
	"crypto/hpke"
	_ "crypto/sha256" // registers crypto.SHA256
	_ "crypto/sha512" // registers crypto.SHA384 and crypto.SHA512
)

func init() {
	Register(&composite{
		id:   X25519_AES128GCM_SHA256_Ed25519,
		name: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
		hash: crypto.SHA256,
		hpke: stdHPKE{hpke.DHKEM(ecdh.X25519()), hpke.HKDFSHA256(), hpke.AES128GCM()},
		aead: aesGCM{16},
		sig:  ed25519Scheme{},
	})
}
