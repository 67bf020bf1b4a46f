package mls

import (
	"bytes"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// Fuzz targets for every decoder of bytes a client receives. Each checks
// that decoding never panics and that what decodes re-encodes to the same
// bytes (the encoding is canonical). Seeds come from the official vectors;
// run one with e.g. go test -run=^$ -fuzz=FuzzMLSMessage ./mls

// seedMessages adds every serialized MLSMessage of the vectors to f.
func seedMessages(f *testing.F, want WireFormat) {
	var msgs []messagesVector
	testvec.Load(f, "messages.json", &msgs)
	for _, m := range msgs[:20] {
		for _, b := range [][]byte{m.MLSWelcome, m.MLSGroupInfo, m.MLSKeyPackage, m.PublicMessageApplication,
			m.PublicMessageProposal, m.PublicMessageCommit, m.PrivateMessage} {
			if wf := WireFormat(uint16(b[2])<<8 | uint16(b[3])); want == 0 || wf == want {
				f.Add(b)
			}
		}
	}
	var passive []passiveVector
	testvec.Load(f, "passive-client-handling-commit.json", &passive)
	for _, p := range passive[:13] {
		f.Add([]byte(p.Welcome))
		f.Add([]byte(p.KeyPackage))
		for _, e := range p.Epochs {
			f.Add([]byte(e.Commit))
			for _, pr := range e.Proposals {
				f.Add([]byte(pr))
			}
		}
	}
}

// roundTrip decodes data into v and, when that succeeds, checks that v
// encodes back to data.
func roundTrip(t *testing.T, data []byte, v interface {
	codec.Marshaler
	codec.Unmarshaler
}) bool {
	if codec.Unmarshal(data, v) != nil {
		return false
	}
	if got := codec.Marshal(v); !bytes.Equal(got, data) {
		t.Fatalf("re-encoding differs:\n in %x\nout %x", data, got)
	}
	return true
}

func FuzzMLSMessage(f *testing.F) {
	seedMessages(f, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, new(MLSMessage))
	})
}

func FuzzKeyPackage(f *testing.F) {
	seedMessages(f, WireFormatKeyPackage)
	f.Fuzz(func(t *testing.T, data []byte) {
		// Both the bare KeyPackage and the MLSMessage-framed form arrive.
		var kp KeyPackage
		if roundTrip(t, data, &kp) {
			_ = ValidateKeyPackage(&kp, timeZero)
		}
		var m MLSMessage
		if roundTrip(t, data, &m) && m.KeyPackage != nil {
			_ = ValidateKeyPackage(m.KeyPackage, timeZero)
		}
	})
}

func FuzzWelcome(f *testing.F) {
	seedMessages(f, WireFormatWelcome)
	f.Fuzz(func(t *testing.T, data []byte) {
		var m MLSMessage
		if roundTrip(t, data, &m) && m.Welcome != nil {
			roundTrip(t, codec.Marshal(m.Welcome), new(Welcome))
		}
		roundTrip(t, data, new(Welcome))
		roundTrip(t, data, new(GroupSecrets))
	})
}

func FuzzGroupInfo(f *testing.F) {
	seedMessages(f, WireFormatGroupInfo)
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, new(GroupInfo))
		var m MLSMessage
		if roundTrip(t, data, &m) && m.GroupInfo != nil {
			if rt, ok := m.GroupInfo.Extensions.Find(ExtensionTypeRatchetTree); ok {
				var tree RatchetTree
				roundTrip(t, rt, &tree)
			}
		}
	})
}

// FuzzRatchetTree decodes a ratchet tree and runs the validation a joiner
// does on it, which must fail cleanly on any nonsense.
func FuzzRatchetTree(f *testing.F) {
	var tv []struct {
		Tree    testvec.Hex
		GroupID testvec.Hex `json:"group_id"`
	}
	testvec.Load(f, "tree-validation.json", &tv)
	for _, c := range tv[:14] {
		f.Add([]byte(c.Tree))
	}
	var msgs []messagesVector
	testvec.Load(f, "messages.json", &msgs)
	for _, m := range msgs[:10] {
		f.Add([]byte(m.RatchetTree))
	}
	s, _ := cipher.Lookup(cipher.X25519_AES128GCM_SHA256_Ed25519)
	f.Fuzz(func(t *testing.T, data []byte) {
		var rt RatchetTree
		if !roundTrip(t, data, &rt) {
			return
		}
		tree, err := importRatchetTree(s, rt)
		if err != nil {
			return
		}
		_ = tree.rootHash()
		_ = tree.verifyStructure()
		_ = tree.verifyParentHashes()
		for l := LeafIndex(0); uint32(l) < tree.numLeaves(); l++ {
			_ = tree.filteredDirectPath(l)
		}
		if err := tree.verifyStructure(); err == nil {
			if again := codec.Marshal(tree.export()); !bytes.Equal(again, data) {
				t.Fatalf("export of an imported tree differs")
			}
		}
	})
}

var timeZero time.Time

// FuzzProcess feeds arbitrary messages to a member of a live two-member
// group: whatever arrives, Process returns an error or a result, never
// panics.
func FuzzProcess(f *testing.F) {
	const suite = cipher.X25519_AES128GCM_SHA256_Ed25519
	alice, bob := newClient(f, suite, "alice"), newClient(f, suite, "bob")
	var err error
	alice.g, err = NewGroup(suite, []byte("fuzz group"), alice.signer, alice.cred, LeafOptions{}, nil, Config{})
	if err != nil {
		f.Fatal(err)
	}
	bobKP := bob.keyPackage(f, suite)
	commitAndDeliver(f, alice, CommitOptions{Proposals: []Proposal{&AddProposal{KeyPackage: *bobKP.KeyPackage}}, RatchetTreeInWelcome: true},
		nil, map[*client]*KeyPackageBundle{bob: bobKP}, Config{})
	for _, wf := range []WireFormat{WireFormatPublicMessage, WireFormatPrivateMessage} {
		pc, err := alice.g.Commit(CommitOptions{ForcePath: true, WireFormat: wf})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pc.Message.Encode())
		alice.g.DiscardPendingCommit()
		pm, _, err := alice.g.Propose(&RemoveProposal{Removed: 1}, wf)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pm.Encode())
	}
	alice.g.proposals = nil
	m, err := alice.g.Encrypt([]byte("hello"), nil, 3)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m.Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMLSMessage(data)
		if err != nil {
			return
		}
		_, _ = bob.g.Process(m)
	})
}

// stateSeeds returns the persisted states of the members of a live group
// at awkward moments (a Commit pending, proposals cached, past epochs
// kept, removed), a message for them, and key package bundles.
func stateSeeds(f *testing.F) (states [][]byte, msg *MLSMessage, bundles [][]byte) {
	cs := newGroupOf(f, Config{}, "alice", "bob", "carol")
	alice, bob, carol := cs[0], cs[1], cs[2]
	commitAndDeliver(f, alice, CommitOptions{ForcePath: true}, []*client{bob, carol}, nil, Config{})
	m, _, err := bob.g.ProposeUpdate(WireFormatPrivateMessage)
	if err != nil {
		f.Fatal(err)
	}
	deliver(f, m, alice, carol)
	if _, err := alice.g.Commit(CommitOptions{}); err != nil {
		f.Fatal(err)
	}
	for _, c := range cs {
		states = append(states, c.g.MarshalState())
	}
	if _, err := alice.g.MergePendingCommit(); err != nil {
		f.Fatal(err)
	}
	pc, err := alice.g.Commit(CommitOptions{Proposals: []Proposal{&RemoveProposal{Removed: carol.g.OwnLeaf()}}})
	if err != nil {
		f.Fatal(err)
	}
	states = append(states, alice.g.MarshalState())
	for _, kp := range []*KeyPackageBundle{carol.keyPackage(f, testSuite), mustLastResort(f, carol)} {
		b, err := kp.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		bundles = append(bundles, b)
	}
	return states, pc.Message, bundles
}

func mustLastResort(f *testing.F, c *client) *KeyPackageBundle {
	kp, err := NewKeyPackage(testSuite, c.signer, c.cred, LeafOptions{}, Extensions{LastResort()})
	if err != nil {
		f.Fatal(err)
	}
	return kp
}

// FuzzGroupState restores group states read back from storage: corrupted
// bytes must give an error, never a panic, and a state that restores must
// work.
func FuzzGroupState(f *testing.F) {
	states, msg, _ := stateSeeds(f)
	for _, s := range states {
		f.Add(s)
	}
	wire := msg.Encode()
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := UnmarshalState(data, Config{})
		if err != nil {
			return
		}
		again, err := UnmarshalState(g.MarshalState(), Config{})
		if err != nil {
			t.Fatalf("a restored state does not restore again: %v", err)
		}
		_ = again.Members()
		_, _ = g.Encrypt([]byte("x"), nil, 0)
		if m, err := DecodeMLSMessage(wire); err == nil {
			_, _ = g.Process(m)
		}
		if g.PendingCommit() != nil {
			_, _ = g.MergePendingCommit()
		}
		_, _ = g.Commit(CommitOptions{ForcePath: true})
	})
}

// FuzzKeyPackageBundle restores key package bundles read back from
// storage.
func FuzzKeyPackageBundle(f *testing.F) {
	_, _, bundles := stateSeeds(f)
	for _, b := range bundles {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		kp, err := UnmarshalKeyPackageBundle(data)
		if err != nil {
			return
		}
		again, err := kp.MarshalBinary()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("bundle re-encodes differently (%v)", err)
		}
	})
}
