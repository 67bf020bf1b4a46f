package cipher

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"

	circlhpke "github.com/cloudflare/circl/hpke"
)

// aesGCM is AES-GCM with a 16- or 32-byte key and the standard 12-byte nonce.
type aesGCM struct{ size int }

var _ aeadScheme = aesGCM{}

func (a aesGCM) keySize() int   { return a.size }
func (a aesGCM) nonceSize() int { return 12 }

func (a aesGCM) new(key []byte) (cipher.AEAD, error) {
	if len(key) != a.size {
		return nil, fmt.Errorf("%w: AES key of %d bytes, want %d", ErrKey, len(key), a.size)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// chacha20Poly1305 is ChaCha20-Poly1305 (RFC 8439). The standard library
// keeps its implementation internal to crypto/hpke and crypto/tls, so the
// plain AEAD comes from circl's HPKE package.
type chacha20Poly1305 struct{}

var _ aeadScheme = chacha20Poly1305{}

const chachaKeySize = 32

func (chacha20Poly1305) keySize() int   { return chachaKeySize }
func (chacha20Poly1305) nonceSize() int { return 12 }

func (chacha20Poly1305) new(key []byte) (cipher.AEAD, error) {
	if len(key) != chachaKeySize {
		return nil, fmt.Errorf("%w: ChaCha20-Poly1305 key of %d bytes, want %d", ErrKey, len(key), chachaKeySize)
	}
	return circlhpke.AEAD_ChaCha20Poly1305.New(key)
}
