package mls

import (
	"bytes"
	"errors"
	"testing"

	"github.com/quicproquo/qpq/mls/cipher"
)

// TestMemberKeys checks the cache of parsed signature keys: one entry per
// leaf, reused while the leaf's key is the same, replaced when it changes,
// and nothing kept for a key that does not parse.
func TestMemberKeys(t *testing.T) {
	s, err := cipher.Lookup(testSuite)
	if err != nil {
		t.Fatal(err)
	}
	g := &Group{suite: s}
	a, _ := s.GenerateSigner()
	b, _ := s.GenerateSigner()
	msg := []byte("content")
	sigA, _ := a.Sign(msg)
	sigB, _ := b.Sign(msg)

	ka, err := g.verificationKey(3, a.Public())
	if err != nil || ka.Verify(msg, sigA) != nil {
		t.Fatalf("key of leaf 3: %v", err)
	}
	if again, _ := g.verificationKey(3, a.Public()); again != ka {
		t.Fatal("the same key of the same leaf was parsed again")
	}
	kb, err := g.verificationKey(3, b.Public())
	if err != nil || kb.Verify(msg, sigB) != nil || kb.Verify(msg, sigA) == nil {
		t.Fatalf("new key of leaf 3 not used: %v", err)
	}
	if len(g.memberKeys) != 1 || !bytes.Equal(g.memberKeys[3].pub, b.Public()) {
		t.Fatalf("cache holds %d entries", len(g.memberKeys))
	}
	bad := make([]byte, 32)
	bad[0] = 2 // y = 2 is no point of the curve
	if _, err := g.verificationKey(4, bad); !errors.Is(err, cipher.ErrKey) {
		t.Fatalf("invalid key: err = %v", err)
	}
	if _, ok := g.memberKeys[4]; ok {
		t.Fatal("an invalid key was cached")
	}
}
