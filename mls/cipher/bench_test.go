package cipher

import "testing"

// BenchmarkSuites measures the public-key operations MLS performs per
// member and per commit, for every suite.
func BenchmarkSuites(b *testing.B) {
	for _, id := range Registered() {
		s, _ := Lookup(id)
		signer, err := s.GenerateSigner()
		if err != nil {
			b.Fatal(err)
		}
		msg := make([]byte, 256)
		sig, _ := signer.Sign(msg)
		priv, pub, _ := s.GenerateKEMKey()
		enc, ct, _ := s.HPKESeal(pub, nil, msg[:32])
		ikm := make([]byte, s.Nh())
		for _, op := range []struct {
			name string
			f    func() error
		}{
			{"Sign", func() error { _, err := signer.Sign(msg); return err }},
			{"Verify", func() error { return s.Verify(signer.Public(), msg, sig) }},
			{"DeriveKEMKey", func() error { _, _, err := s.DeriveKEMKey(ikm); return err }},
			{"HPKESeal", func() error { _, _, err := s.HPKESeal(pub, nil, msg[:32]); return err }},
			{"HPKEOpen", func() error { _, err := s.HPKEOpen(priv, enc, nil, ct); return err }},
		} {
			b.Run(id.String()+"/"+op.name, func(b *testing.B) {
				for b.Loop() {
					if err := op.f(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
