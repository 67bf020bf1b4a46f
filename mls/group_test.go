package mls

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/cipher"
)

// client is a test participant: its signer, credential and, once joined,
// its group.
type client struct {
	name   string
	signer cipher.Signer
	cred   Credential
	g      *Group
}

func newClient(t testing.TB, suite CipherSuite, name string) *client {
	t.Helper()
	s, err := cipher.Lookup(suite)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := s.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	return &client{name: name, signer: signer, cred: Credential{Type: CredentialTypeBasic, Identity: []byte(name)}}
}

func (c *client) keyPackage(t testing.TB, suite CipherSuite) *KeyPackageBundle {
	t.Helper()
	kp, err := NewKeyPackage(suite, c.signer, c.cred, LeafOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func randomID(t testing.TB) []byte {
	id := make([]byte, 16)
	rand.Read(id)
	return id
}

// commitAndDeliver has c commit with opts, merges it, delivers the commit
// to the other members and the Welcome to joiners, and checks that
// everybody agrees on the new epoch.
func commitAndDeliver(t testing.TB, c *client, opts CommitOptions, others []*client, joiners map[*client]*KeyPackageBundle, cfg Config) {
	t.Helper()
	pc, err := c.g.Commit(opts)
	if err != nil {
		t.Fatalf("%s: commit: %v", c.name, err)
	}
	if _, err := c.g.MergePendingCommit(); err != nil {
		t.Fatal(err)
	}
	wire := pc.Message.Encode()
	for _, o := range others {
		m, err := DecodeMLSMessage(wire)
		if err != nil {
			t.Fatal(err)
		}
		r, err := o.g.Process(m)
		if err != nil {
			t.Fatalf("%s: process commit from %s: %v", o.name, c.name, err)
		}
		if r.Commit == nil {
			t.Fatalf("%s: commit not recognized", o.name)
		}
		if r.Commit.RemovedSelf {
			o.g = nil
		}
	}
	for j, kp := range joiners {
		var tree RatchetTree
		if !opts.RatchetTreeInWelcome {
			tree = c.g.RatchetTree()
		}
		wm, err := DecodeMLSMessage((&MLSMessage{Version: MLS10, WireFormat: WireFormatWelcome, Welcome: pc.Welcome}).Encode())
		if err != nil {
			t.Fatal(err)
		}
		if j.g, err = JoinWelcome(wm.Welcome, kp, tree, cfg); err != nil {
			t.Fatalf("%s: join: %v", j.name, err)
		}
	}
	all := append([]*client{c}, others...)
	for j := range joiners {
		all = append(all, j)
	}
	for _, o := range all {
		if o.g == nil {
			continue
		}
		if !bytes.Equal(o.g.EpochAuthenticator(), c.g.EpochAuthenticator()) || o.g.Epoch() != c.g.Epoch() {
			t.Fatalf("%s and %s disagree on epoch %d", o.name, c.name, c.g.Epoch())
		}
	}
}

// deliver hands one message from sender to every other client and returns
// what they received.
func deliver(t testing.TB, m *MLSMessage, to ...*client) []*Received {
	t.Helper()
	wire := m.Encode()
	var out []*Received
	for _, o := range to {
		dm, err := DecodeMLSMessage(wire)
		if err != nil {
			t.Fatal(err)
		}
		r, err := o.g.Process(dm)
		if err != nil {
			t.Fatalf("%s: process: %v", o.name, err)
		}
		out = append(out, r)
	}
	return out
}

func TestGroupLifecycle(t *testing.T) {
	for _, id := range cipher.Registered() {
		t.Run(fmt.Sprintf("suite=0x%04x", uint16(id)), func(t *testing.T) {
			t.Parallel()
			testGroupLifecycle(t, id)
		})
	}
}

func testGroupLifecycle(t *testing.T, suite CipherSuite) {
	psk := []byte("an external pre-shared key")
	cfg := Config{PSKs: ExternalPSKs{"psk-1": psk}}
	alice, bob, carol, dave := newClient(t, suite, "alice"), newClient(t, suite, "bob"), newClient(t, suite, "carol"), newClient(t, suite, "dave")
	var err error
	alice.g, err = NewGroup(suite, randomID(t), alice.signer, alice.cred, LeafOptions{}, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Alice adds Bob and Carol by value in one commit without a path; the
	// Welcome carries the tree.
	bobKP, carolKP := bob.keyPackage(t, suite), carol.keyPackage(t, suite)
	commitAndDeliver(t, alice, CommitOptions{
		Proposals:            []Proposal{&AddProposal{KeyPackage: *bobKP.KeyPackage}, &AddProposal{KeyPackage: *carolKP.KeyPackage}},
		RatchetTreeInWelcome: true,
	}, nil, map[*client]*KeyPackageBundle{bob: bobKP, carol: carolKP}, cfg)
	if got := len(alice.g.Members()); got != 3 {
		t.Fatalf("%d members, want 3", got)
	}

	// Application messages in both directions.
	m, err := alice.g.Encrypt([]byte("hello"), []byte("ad"), 16)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range deliver(t, m, bob, carol) {
		if string(r.ApplicationData) != "hello" || string(r.AuthenticatedData) != "ad" || r.Sender.Index != 0 {
			t.Fatalf("received %+v", r)
		}
	}
	m, err = carol.g.Encrypt([]byte("hi all"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, m, alice, bob)

	// Bob proposes an update; Carol commits it by reference in a private
	// message (the path is required).
	pm, _, err := bob.g.ProposeUpdate(WireFormatPrivateMessage)
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, pm, alice, carol)
	// Everybody saves and restores mid-epoch, with a proposal cached and
	// Bob's update key pending.
	for _, c := range []*client{alice, bob, carol} {
		c.g = restore(t, c.g, cfg)
	}
	if _, err := alice.g.Encrypt([]byte("x"), nil, 0); !errors.Is(err, ErrPendingProposals) {
		t.Fatalf("encrypt with pending proposals: err = %v", err)
	}
	commitAndDeliver(t, carol, CommitOptions{WireFormat: WireFormatPrivateMessage}, []*client{alice, bob}, nil, cfg)

	// Bob adds Dave with an external PSK, a full commit, the tree sent
	// out of band.
	daveKP := dave.keyPackage(t, suite)
	nonce := make([]byte, alice.g.suite.Nh())
	rand.Read(nonce)
	commitAndDeliver(t, bob, CommitOptions{ForcePath: true, Proposals: []Proposal{
		&AddProposal{KeyPackage: *daveKP.KeyPackage},
		&PreSharedKeyProposal{PSK: PreSharedKeyID{Type: PSKTypeExternal, PSKID: []byte("psk-1"), PSKNonce: nonce}},
	}}, []*client{alice, carol}, map[*client]*KeyPackageBundle{dave: daveKP}, cfg)

	// A resumption PSK of an earlier epoch and a group context extension
	// change, proposed by Dave, committed by Alice.
	rand.Read(nonce)
	pm, _, err = dave.g.Propose(&PreSharedKeyProposal{PSK: PreSharedKeyID{
		Type: PSKTypeResumption, Usage: ResumptionPSKUsageApplication, PSKGroupID: alice.g.GroupID(), PSKEpoch: alice.g.Epoch(), PSKNonce: nonce,
	}}, WireFormatPublicMessage)
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, pm, alice, bob, carol)
	commitAndDeliver(t, alice, CommitOptions{Proposals: []Proposal{
		&GroupContextExtensionsProposal{Extensions: Extensions{{Type: ExtensionTypeApplicationID, Data: []byte("app")}}},
	}}, []*client{bob, carol, dave}, nil, cfg)
	if !alice.g.Extensions().Has(ExtensionTypeApplicationID) || !dave.g.Extensions().Has(ExtensionTypeApplicationID) {
		t.Fatal("group context extensions not applied")
	}

	// Dave removes Carol; Carol learns she is out.
	commitAndDeliver(t, dave, CommitOptions{Proposals: []Proposal{&RemoveProposal{Removed: carol.g.OwnLeaf()}}}, []*client{alice, bob, carol}, nil, cfg)
	if carol.g != nil {
		t.Fatal("carol still has a group after her removal")
	}
	if got := len(alice.g.Members()); got != 3 {
		t.Fatalf("%d members, want 3", got)
	}

	// Out-of-order application messages across a save and restore.
	m1, _ := alice.g.Encrypt([]byte("one"), nil, 0)
	m2, _ := alice.g.Encrypt([]byte("two"), nil, 0)
	deliver(t, m2, bob)
	bob.g = restore(t, bob.g, cfg)
	if r := deliver(t, m1, bob); string(r[0].ApplicationData) != "one" {
		t.Fatalf("late message: %q", r[0].ApplicationData)
	}

	// An empty commit refreshes Bob's path; exporters agree.
	commitAndDeliver(t, bob, CommitOptions{}, []*client{alice, dave}, nil, cfg)
	x1, _ := alice.g.Export("test", []byte("ctx"), 32)
	x2, _ := dave.g.Export("test", []byte("ctx"), 32)
	if !bytes.Equal(x1, x2) {
		t.Fatal("exported secrets differ")
	}
}

func TestGroupRejects(t *testing.T) {
	const suite = cipher.X25519_AES128GCM_SHA256_Ed25519
	alice, bob := newClient(t, suite, "alice"), newClient(t, suite, "bob")
	var err error
	alice.g, err = NewGroup(suite, randomID(t), alice.signer, alice.cred, LeafOptions{}, nil, Config{})
	if err != nil {
		t.Fatal(err)
	}
	bobKP := bob.keyPackage(t, suite)
	commitAndDeliver(t, alice, CommitOptions{Proposals: []Proposal{&AddProposal{KeyPackage: *bobKP.KeyPackage}}, RatchetTreeInWelcome: true},
		nil, map[*client]*KeyPackageBundle{bob: bobKP}, Config{})

	// A commit for the wrong epoch, a tampered membership tag and a bad
	// confirmation tag are rejected without changing Bob's state.
	pc, err := alice.g.Commit(CommitOptions{ForcePath: true})
	if err != nil {
		t.Fatal(err)
	}
	before := bob.g.EpochAuthenticator()
	tamper := func(f func(m *MLSMessage)) *MLSMessage {
		m, _ := DecodeMLSMessage(pc.Message.Encode())
		f(m)
		m2, err := DecodeMLSMessage(m.Encode())
		if err != nil {
			t.Fatal(err)
		}
		return m2
	}
	for _, c := range []struct {
		name string
		m    *MLSMessage
		want error
	}{
		{"wrong epoch", tamper(func(m *MLSMessage) { m.PublicMessage.Content.Epoch++ }), ErrWrongEpoch},
		{"wrong group", tamper(func(m *MLSMessage) { m.PublicMessage.Content.GroupID = []byte("other") }), ErrWrongGroup},
		{"membership tag", tamper(func(m *MLSMessage) { m.PublicMessage.MembershipTag[0] ^= 1 }), ErrBadMembershipTag},
		{"confirmation tag", tamper(func(m *MLSMessage) { m.PublicMessage.Auth.ConfirmationTag[0] ^= 1 }), ErrBadMembershipTag},
		{"signature", tamper(func(m *MLSMessage) { m.PublicMessage.Auth.Signature[0] ^= 1 }), ErrBadMembershipTag},
		// The same with a membership tag recomputed, as another member could.
		{"confirmation tag, valid membership tag", tamper(func(m *MLSMessage) {
			m.PublicMessage.Auth.ConfirmationTag[0] ^= 1
			retag(alice.g, m)
		}), ErrBadConfirmationTag},
		{"signature, valid membership tag", tamper(func(m *MLSMessage) {
			m.PublicMessage.Auth.Signature[0] ^= 1
			retag(alice.g, m)
		}), ErrBadSignature},
	} {
		if _, err := bob.g.Process(c.m); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
		if !bytes.Equal(bob.g.EpochAuthenticator(), before) {
			t.Fatalf("%s: state changed", c.name)
		}
	}
	// The untampered commit goes through; the pending one of a lost race is
	// refused.
	if _, err := bob.g.Process(pc.Message); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.g.MergePendingCommit(); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.g.MergePendingCommit(); !errors.Is(err, ErrNoPendingCommit) {
		t.Fatalf("merging twice: err = %v", err)
	}
	// Replay of an application message.
	m, _ := alice.g.Encrypt([]byte("once"), nil, 0)
	deliver(t, m, bob)
	if _, err := bob.g.Process(m); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: err = %v", err)
	}
}

// retag recomputes a PublicMessage's membership tag with g's key.
func retag(g *Group, m *MLSMessage) {
	pm := m.PublicMessage
	ac := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: pm.Content, Auth: pm.Auth}
	pm.MembershipTag = membershipTag(g.suite, g.secrets.membership, ac, g.ctxBytes)
}

// restore round-trips a group through MarshalState and UnmarshalState and
// checks that the state encodes the same again.
func restore(t testing.TB, g *Group, cfg Config) *Group {
	t.Helper()
	data := g.MarshalState()
	r, err := UnmarshalState(data, cfg)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !bytes.Equal(r.MarshalState(), data) {
		t.Fatal("restored state encodes differently")
	}
	return r
}

func TestExternalJoin(t *testing.T) {
	for _, id := range cipher.Registered() {
		t.Run(fmt.Sprintf("suite=0x%04x", uint16(id)), func(t *testing.T) {
			t.Parallel()
			suite := id
			alice, bob, carol := newClient(t, suite, "alice"), newClient(t, suite, "bob"), newClient(t, suite, "carol")
			var err error
			alice.g, err = NewGroup(suite, randomID(t), alice.signer, alice.cred, LeafOptions{}, nil, Config{})
			if err != nil {
				t.Fatal(err)
			}
			bobKP := bob.keyPackage(t, suite)
			commitAndDeliver(t, alice, CommitOptions{Proposals: []Proposal{&AddProposal{KeyPackage: *bobKP.KeyPackage}}},
				nil, map[*client]*KeyPackageBundle{bob: bobKP}, Config{})

			gi, err := alice.g.GroupInfo(GroupInfoOptions{RatchetTree: true, ExternalPub: true})
			if err != nil {
				t.Fatal(err)
			}
			wire := (&MLSMessage{Version: MLS10, WireFormat: WireFormatGroupInfo, GroupInfo: gi}).Encode()
			gim, err := DecodeMLSMessage(wire)
			if err != nil {
				t.Fatal(err)
			}
			g, pc, err := JoinExternal(gim.GroupInfo, nil, carol.signer, carol.cred, ExternalJoinOptions{}, Config{})
			if err != nil {
				t.Fatalf("join external: %v", err)
			}
			if _, err := g.Encrypt([]byte("too early"), nil, 0); !errors.Is(err, ErrWrongEpoch) {
				t.Fatalf("encrypt before the merge: err = %v", err)
			}
			g = restore(t, g, Config{}) // the joiner's state persists while its Commit is pending
			for _, r := range deliver(t, pc.Message, alice, bob) {
				if r.Commit == nil || len(r.Commit.Added) != 1 || r.Sender.Type != SenderTypeNewMemberCommit {
					t.Fatalf("external commit result %+v", r.Commit)
				}
			}
			if _, err := g.MergePendingCommit(); err != nil {
				t.Fatal(err)
			}
			carol.g = g
			for _, c := range []*client{alice, bob} {
				if !bytes.Equal(c.g.EpochAuthenticator(), carol.g.EpochAuthenticator()) {
					t.Fatalf("%s and carol disagree after the external join", c.name)
				}
			}
			m, err := carol.g.Encrypt([]byte("hello from carol"), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			deliver(t, m, alice, bob)
			commitAndDeliver(t, bob, CommitOptions{Proposals: []Proposal{&RemoveProposal{Removed: alice.g.OwnLeaf()}}}, []*client{alice, carol}, nil, Config{})
			if alice.g != nil {
				t.Fatal("alice still in the group")
			}
		})
	}
}

func TestPrintingRedactsSecrets(t *testing.T) {
	const suite = cipher.X25519_AES128GCM_SHA256_Ed25519
	alice := newClient(t, suite, "alice")
	g, err := NewGroup(suite, randomID(t), alice.signer, alice.cred, LeafOptions{}, nil, Config{})
	if err != nil {
		t.Fatal(err)
	}
	kp := alice.keyPackage(t, suite)
	out := fmt.Sprintf("%v %+v %v %+v %v %v %+v %v", g, g, kp, kp, g.secrets, *g.priv, *kp, *g.secretTree)
	for _, secret := range [][]byte{g.secrets.init, g.secrets.encryption, kp.InitPriv, kp.EncryptionPriv, g.priv.keys[0].priv} {
		if bytes.Contains([]byte(out), []byte(fmt.Sprint(secret))) || bytes.Contains([]byte(out), []byte(fmt.Sprintf("%x", secret))) {
			t.Fatalf("printed state shows a secret: %s", out)
		}
	}
}

// TestReceivedSignatureKey: Process reports the key a message verified
// with, also for a late message of a past epoch whose sender's leaf has
// since been given to someone else.
func TestReceivedSignatureKey(t *testing.T) {
	suite := CipherSuite(cipher.X25519_AES128GCM_SHA256_Ed25519)
	alice, bob, carol, dave := newClient(t, suite, "alice"), newClient(t, suite, "bob"), newClient(t, suite, "carol"), newClient(t, suite, "dave")
	var err error
	if alice.g, err = NewGroup(suite, randomID(t), alice.signer, alice.cred, LeafOptions{}, nil, Config{}); err != nil {
		t.Fatal(err)
	}
	addOpts := func(cs ...*client) (CommitOptions, map[*client]*KeyPackageBundle) {
		opts := CommitOptions{RatchetTreeInWelcome: true}
		joiners := map[*client]*KeyPackageBundle{}
		for _, c := range cs {
			kp := c.keyPackage(t, suite)
			opts.Proposals = append(opts.Proposals, &AddProposal{KeyPackage: *kp.KeyPackage})
			joiners[c] = kp
		}
		return opts, joiners
	}
	opts, joiners := addOpts(bob, carol)
	commitAndDeliver(t, alice, opts, nil, joiners, Config{})

	late, err := bob.g.Encrypt([]byte("sent before bob was removed"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := deliver(t, late, carol)[0]
	if !bytes.Equal(got.SignatureKey, bob.signer.Public()) {
		t.Fatal("SignatureKey is not the sender's")
	}
	late2, err := bob.g.Encrypt([]byte("arrives after bob's leaf went to dave"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Remove bob and add dave, who takes bob's leaf.
	opts, joiners = addOpts(dave)
	opts.Proposals = append([]Proposal{&RemoveProposal{Removed: bob.g.OwnLeaf()}}, opts.Proposals...)
	commitAndDeliver(t, alice, opts, []*client{bob, carol}, joiners, Config{})
	if dave.g.OwnLeaf() != 1 {
		t.Fatalf("dave is at leaf %d, want bob's leaf 1", dave.g.OwnLeaf())
	}
	got = deliver(t, late2, carol)[0]
	if !bytes.Equal(got.SignatureKey, bob.signer.Public()) || got.Sender.Index != 1 {
		t.Fatal("a past epoch's message is not attributed to the key that signed it")
	}
	if m, _ := carol.g.Member(1); !bytes.Equal(m.SignatureKey, dave.signer.Public()) {
		t.Fatal("leaf 1 is not dave's now")
	}
}
