package pake

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bytemare/opaque"
)

// server runs the library's server side with our configuration, to check
// the client flows and the message sizes the package doc promises.
func server(t testing.TB) *opaque.Server {
	t.Helper()
	conf := Configuration()
	sk, pk := conf.KeyGen()
	srv, err := conf.Server()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetKeyMaterial(&opaque.ServerKeyMaterial{PrivateKey: sk, PublicKeyBytes: pk.Encode(), OPRFGlobalSeed: conf.GenerateOPRFSeed()}); err != nil {
		t.Fatal(err)
	}
	return srv
}

func TestRegisterAndLogin(t *testing.T) {
	srv := server(t)
	cred := []byte("alice")

	reg, req, err := StartRegistration([]byte("pw"))
	if err != nil || len(req) != 32 {
		t.Fatalf("request %d bytes, %v", len(req), err)
	}
	r, _ := srv.Deserialize.RegistrationRequest(req)
	resp, err := srv.RegistrationResponse(r, cred, nil)
	if err != nil || len(resp.Serialize()) != 64 {
		t.Fatalf("response: %v", err)
	}
	upload, err := reg.Finish(resp.Serialize())
	if err != nil || len(upload) != 192 {
		t.Fatalf("record %d bytes, %v", len(upload), err)
	}
	rec, err := srv.Deserialize.RegistrationRecord(upload)
	if err != nil {
		t.Fatal(err)
	}
	record := &opaque.ClientRecord{RegistrationRecord: rec, CredentialIdentifier: cred}

	loginWith := func(password string) ([]byte, []byte, error) {
		l, ke1, err := StartLogin([]byte(password))
		if err != nil || len(ke1) != 96 {
			t.Fatalf("KE1 %d bytes, %v", len(ke1), err)
		}
		m1, _ := srv.Deserialize.KE1(ke1)
		ke2, out, err := srv.GenerateKE2(m1, record)
		if err != nil || len(ke2.Serialize()) != 320 {
			t.Fatalf("KE2: %v", err)
		}
		ke3, err := l.Finish(ke2.Serialize())
		return ke3, out.ClientMAC, err
	}
	ke3, mac, err := loginWith("pw")
	if err != nil || len(ke3) != 64 {
		t.Fatalf("KE3 %d bytes, %v", len(ke3), err)
	}
	m3, _ := srv.Deserialize.KE3(ke3)
	if err := srv.LoginFinish(m3, mac); err != nil {
		t.Fatalf("server refused the right password: %v", err)
	}
	if _, _, err := loginWith("wrong"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestContextIsBound(t *testing.T) {
	if !bytes.Equal(Configuration().Context, []byte("quicproquo/opaque/v1")) {
		t.Fatal("context string changed: every registered account would stop working")
	}
	if err := opaque.DefaultConfiguration().Equals(&opaque.Configuration{
		OPRF: Configuration().OPRF, AKE: Configuration().AKE, KSF: Configuration().KSF,
		KDF: Configuration().KDF, MAC: Configuration().MAC, Hash: Configuration().Hash,
	}); err != nil {
		t.Fatalf("configuration differs from the library default: %v", err)
	}
}

func TestPasswordBounds(t *testing.T) {
	if _, _, err := StartLogin(nil); err == nil {
		t.Fatal("empty password accepted")
	}
	if _, _, err := StartRegistration(make([]byte, MaxPasswordSize+1)); err == nil {
		t.Fatal("oversized password accepted")
	}
}

// FuzzServerMessages feeds arbitrary server answers to the client flows,
// which parse bytes from the network.
func FuzzServerMessages(f *testing.F) {
	f.Add(make([]byte, 64))
	f.Add(make([]byte, 320))
	f.Add(bytes.Repeat([]byte{0xff}, 320))
	f.Fuzz(func(t *testing.T, msg []byte) {
		reg, _, err := StartRegistration([]byte("pw"))
		if err != nil {
			t.Fatal(err)
		}
		reg.Finish(msg) // must not panic
		l, _, err := StartLogin([]byte("pw"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Finish(msg); err == nil {
			t.Fatal("a fuzzed KE2 opened")
		}
	})
}
