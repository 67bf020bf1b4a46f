package cipher

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
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
