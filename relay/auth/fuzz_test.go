package auth

import (
	"bytes"
	"testing"

	"github.com/bytemare/opaque"

	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/rpc/pake"
)

// FuzzOPAQUEMessages feeds arbitrary bytes to every server path that
// parses an OPAQUE message from the network. Each must answer with a
// coded error (never a panic, never internal) or succeed.
func FuzzOPAQUEMessages(f *testing.F) {
	_, regReq, _ := pake.StartRegistration([]byte("pw"))
	_, ke1, _ := pake.StartLogin([]byte("pw"))
	f.Add("alice", regReq)
	f.Add("alice", ke1)
	f.Add("bob", make([]byte, 192))
	f.Add("", bytes.Repeat([]byte{0xff}, 96))
	f.Add("carol", bytes.Repeat([]byte{1}, 64))

	a := newAccounts(f, f.TempDir(), Config{})
	id := identity()
	register(f, a, "alice", "pw", id)
	f.Fuzz(func(t *testing.T, username string, msg []byte) {
		check := func(what string, err error) {
			if err != nil && errcode.Of(err) == errcode.Internal {
				t.Fatalf("%s: internal error for client input: %v", what, err)
			}
		}
		_, err := a.RegisterStart(username, "addr", msg)
		check("RegisterStart", err)
		p, _, err := a.LoginStart(username, "addr", msg)
		check("LoginStart", err)
		if p != nil {
			_, err := p.Finish(msg, id)
			check("LoginFinish", err)
			if err == nil {
				t.Fatal("a fuzzed KE3 logged in")
			}
		}
		// RegisterFinish last: it may create the user.
		err = a.RegisterFinish(username, msg, identity())
		check("RegisterFinish", err)
	})
}

func FuzzCheckUsername(f *testing.F) {
	for _, s := range []string{"alice", "Zoë", "a b", " a", "a\n", "\xff", "日本語"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := CheckUsername(s); err != nil {
			if errcode.Of(err) != errcode.InvalidArgument {
				t.Fatalf("%q: %v", s, err)
			}
			return
		}
		if s == "" || len(s) > MaxUsernameSize {
			t.Fatalf("%q accepted", s)
		}
	})
}

func FuzzKeyMaterial(f *testing.F) {
	conf := pake.Configuration()
	sk, pk := conf.KeyGen()
	f.Add(encodeKeyMaterial(&opaque.ServerKeyMaterial{PrivateKey: sk, PublicKeyBytes: pk.Encode(), OPRFGlobalSeed: conf.GenerateOPRFSeed()}))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		skm, err := decodeKeyMaterial(b)
		if err != nil {
			return
		}
		if got := encodeKeyMaterial(skm); !bytes.Equal(got, b) {
			t.Fatalf("key material does not round-trip")
		}
		srv, _ := conf.Server()
		if err := srv.SetKeyMaterial(skm); err != nil {
			t.Fatalf("decoded key material refused by the library: %v", err)
		}
	})
}
