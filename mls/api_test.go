package mls

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/cipher"
)

const testSuite = cipher.X25519_AES128GCM_SHA256_Ed25519

// newGroupOf makes a group of the named clients: the first creates it and
// adds the others in one Commit.
func newGroupOf(t testing.TB, cfg Config, names ...string) []*client {
	t.Helper()
	cs := make([]*client, len(names))
	for i, n := range names {
		cs[i] = newClient(t, testSuite, n)
	}
	var err error
	cs[0].g, err = NewGroup(testSuite, randomID(t), cs[0].signer, cs[0].cred, LeafOptions{}, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) == 1 {
		return cs
	}
	joiners := map[*client]*KeyPackageBundle{}
	var adds []Proposal
	for _, c := range cs[1:] {
		kp := c.keyPackage(t, testSuite)
		joiners[c] = kp
		adds = append(adds, &AddProposal{KeyPackage: *kp.KeyPackage})
	}
	commitAndDeliver(t, cs[0], CommitOptions{Proposals: adds, RatchetTreeInWelcome: true}, nil, joiners, cfg)
	return cs
}

// process decodes a copy of m at c and processes it.
func process(t testing.TB, c *client, m *MLSMessage) (*Received, error) {
	t.Helper()
	dm, err := DecodeMLSMessage(m.Encode())
	if err != nil {
		t.Fatal(err)
	}
	return c.g.Process(dm)
}

// unchanged runs f and fails if c's persisted state changed.
func unchanged(t testing.TB, c *client, what string, f func()) {
	t.Helper()
	before := c.g.MarshalState()
	f()
	if !bytes.Equal(before, c.g.MarshalState()) {
		t.Fatalf("%s: %s's state changed", what, c.name)
	}
}

// expectErr processes m at c, expects an error matching want and no
// change of c's state.
func expectErr(t testing.TB, c *client, m *MLSMessage, want error, what string) {
	t.Helper()
	unchanged(t, c, what, func() {
		if _, err := process(t, c, m); !errors.Is(err, want) {
			t.Fatalf("%s: err = %v, want %v", what, err, want)
		}
	})
}

func commit(t testing.TB, c *client, opts CommitOptions) *PendingCommit {
	t.Helper()
	pc, err := c.g.Commit(opts)
	if err != nil {
		t.Fatalf("%s: commit: %v", c.name, err)
	}
	return pc
}

func merge(t testing.TB, c *client) *CommitResult {
	t.Helper()
	res, err := c.g.MergePendingCommit()
	if err != nil {
		t.Fatalf("%s: merge: %v", c.name, err)
	}
	return res
}

func encrypt(t testing.TB, c *client, text string) *MLSMessage {
	t.Helper()
	m, err := c.g.Encrypt([]byte(text), nil, 0)
	if err != nil {
		t.Fatalf("%s: encrypt: %v", c.name, err)
	}
	return m
}

func wantText(t testing.TB, c *client, m *MLSMessage, text string) {
	t.Helper()
	r, err := process(t, c, m)
	if err != nil {
		t.Fatalf("%s: %q: %v", c.name, text, err)
	}
	if string(r.ApplicationData) != text {
		t.Fatalf("%s: got %q, want %q", c.name, r.ApplicationData, text)
	}
}

func propose(t testing.TB, c *client, p Proposal, wf WireFormat) (*MLSMessage, []byte) {
	t.Helper()
	m, ref, err := c.g.Propose(p, wf)
	if err != nil {
		t.Fatalf("%s: propose: %v", c.name, err)
	}
	return m, ref
}

func wireFormats(t *testing.T, f func(t *testing.T, wf WireFormat)) {
	for _, wf := range []WireFormat{WireFormatPublicMessage, WireFormatPrivateMessage} {
		t.Run(fmt.Sprintf("wire_format=%d", wf), func(t *testing.T) { f(t, wf) })
	}
}

// TestPastEpochs: application messages of the DefaultPastEpochs epochs
// before the current one still decrypt, across a save and restore; older
// ones are ErrEpochExpired; of a left epoch only the decryption keys stay.
func TestPastEpochs(t *testing.T) {
	cs := newGroupOf(t, Config{}, "alice", "bob")
	alice, bob := cs[0], cs[1]
	var msgs []*MLSMessage
	for i := range 3 {
		msgs = append(msgs, encrypt(t, alice, fmt.Sprint("epoch+", i)))
		before := bob.g.secrets
		commitAndDeliver(t, alice, CommitOptions{}, []*client{bob}, nil, Config{})
		for name, s := range map[string][]byte{"init": before.init, "exporter": before.exporter, "external": before.external,
			"membership": before.membership, "resumption": before.resumption, "confirmation": before.confirmation,
			"encryption": before.encryption, "authenticator": before.authenticator} {
			if !bytes.Equal(s, make([]byte, len(s))) {
				t.Fatalf("the %s secret of a left epoch is still held", name)
			}
		}
	}
	bob.g = restore(t, bob.g, Config{})
	if got := len(bob.g.past); got != DefaultPastEpochs {
		t.Fatalf("%d past epochs kept, want %d", got, DefaultPastEpochs)
	}
	wantText(t, bob, msgs[2], "epoch+2")
	wantText(t, bob, msgs[1], "epoch+1")
	expectErr(t, bob, msgs[0], ErrEpochExpired, "three epochs back")
	expectErr(t, bob, msgs[1], ErrReplay, "replay of a past epoch's message")
	if _, err := process(t, bob, msgs[0]); !errors.Is(err, ErrWrongEpoch) {
		t.Fatalf("ErrEpochExpired does not match ErrWrongEpoch: %v", err)
	}

	// Without past epochs, the message of the previous epoch is expired.
	cs = newGroupOf(t, Config{PastEpochs: -1}, "alice", "bob")
	alice, bob = cs[0], cs[1]
	m := encrypt(t, alice, "late")
	commitAndDeliver(t, alice, CommitOptions{}, []*client{bob}, nil, Config{PastEpochs: -1})
	expectErr(t, bob, m, ErrEpochExpired, "no past epochs kept")
}

// TestFutureEpoch: a message of a later epoch is ErrFutureEpoch and
// changes nothing; after the Commit it processes.
func TestFutureEpoch(t *testing.T) {
	wireFormats(t, func(t *testing.T, wf WireFormat) {
		cs := newGroupOf(t, Config{}, "alice", "bob")
		alice, bob := cs[0], cs[1]
		pc1 := commit(t, alice, CommitOptions{WireFormat: wf})
		merge(t, alice)
		m := encrypt(t, alice, "from the future")
		pc2 := commit(t, alice, CommitOptions{WireFormat: wf})
		merge(t, alice)
		expectErr(t, bob, m, ErrFutureEpoch, "application message")
		expectErr(t, bob, pc2.Message, ErrFutureEpoch, "commit two epochs ahead")
		if _, err := process(t, bob, pc1.Message); err != nil {
			t.Fatal(err)
		}
		wantText(t, bob, m, "from the future")
		if _, err := process(t, bob, pc2.Message); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(alice.g.EpochAuthenticator(), bob.g.EpochAuthenticator()) {
			t.Fatal("alice and bob disagree")
		}
	})
}

// TestConflictingCommits: of two Commits for one epoch the first processed
// wins; the other is ErrStaleCommit and changes nothing; its maker learns
// its Commit lost and gets its proposals back to retry.
func TestConflictingCommits(t *testing.T) {
	wireFormats(t, func(t *testing.T, wf WireFormat) {
		cs := newGroupOf(t, Config{}, "alice", "bob", "carol")
		alice, bob, carol := cs[0], cs[1], cs[2]
		dave := newClient(t, testSuite, "dave")
		daveKP := dave.keyPackage(t, testSuite)

		// Carol proposes a group context extension that Bob's commit will
		// not include; Alice adds Dave by value.
		gce, _ := propose(t, carol, &GroupContextExtensionsProposal{Extensions: Extensions{{Type: ExtensionTypeApplicationID, Data: []byte("x")}}}, wf)
		deliver(t, gce, alice, bob)
		pcA := commit(t, alice, CommitOptions{WireFormat: wf, Proposals: []Proposal{&AddProposal{KeyPackage: *daveKP.KeyPackage}}})
		if _, err := alice.g.Commit(CommitOptions{}); !errors.Is(err, ErrCommitPending) {
			t.Fatalf("second commit while one is pending: err = %v", err)
		}
		pcB := commit(t, bob, CommitOptions{WireFormat: wf, SkipCached: true, ForcePath: true})

		// The delivery service orders B first.
		merge(t, bob)
		if _, err := process(t, carol, pcB.Message); err != nil {
			t.Fatal(err)
		}
		r, err := process(t, alice, pcB.Message)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Commit.PendingDiscarded || alice.g.PendingCommit() != nil {
			t.Fatalf("alice's pending commit was not discarded: %+v", r.Commit)
		}
		if len(r.Commit.Retry) != 1 || r.Commit.Retry[0].ProposalType() != ProposalTypeAdd {
			t.Fatalf("retry = %v, want alice's Add", r.Commit.Retry)
		}
		rc, err := process(t, carol, gce) // carol's proposal died with the epoch
		if !errors.Is(err, ErrOwnMessage) && !errors.Is(err, ErrStaleProposal) {
			t.Fatalf("carol's old proposal: %v %v", rc, err)
		}
		if _, err := alice.g.MergePendingCommit(); !errors.Is(err, ErrNoPendingCommit) {
			t.Fatalf("merging a lost commit: err = %v", err)
		}
		for _, c := range []*client{bob, carol} {
			expectErr(t, c, pcA.Message, ErrStaleCommit, "losing commit at "+c.name)
		}
		expectErr(t, carol, pcB.Message, ErrReplay, "the winning commit again")
		expectErr(t, bob, pcB.Message, ErrOwnCommit, "bob's own commit echoed")

		// Alice retries her Add in the new epoch.
		commitAndDeliver(t, alice, CommitOptions{WireFormat: wf, Proposals: r.Commit.Retry}, []*client{bob, carol},
			map[*client]*KeyPackageBundle{dave: daveKP}, Config{})

		// A Commit the delivery service refused is discarded by its maker.
		rm := &RemoveProposal{Removed: dave.g.OwnLeaf()}
		commit(t, carol, CommitOptions{WireFormat: wf, Proposals: []Proposal{rm}})
		if back := carol.g.DiscardPendingCommit(); len(back) != 1 || back[0] != Proposal(rm) {
			t.Fatalf("discard returned %v", back)
		}
		if carol.g.PendingCommit() != nil {
			t.Fatal("still pending after discard")
		}
		commitAndDeliver(t, carol, CommitOptions{WireFormat: wf, Proposals: []Proposal{rm}}, []*client{alice, bob, dave}, nil, Config{})
	})
}

// TestRejectsWithoutChange: Commits by non-members, of wrong epochs, with
// bad signatures, bad confirmation or membership tags are each rejected
// with their own error and change nothing.
func TestRejectsWithoutChange(t *testing.T) {
	cs := newGroupOf(t, Config{}, "alice", "bob", "carol")
	alice, bob := cs[0], cs[1]
	pc := commit(t, alice, CommitOptions{ForcePath: true})
	tamper := func(f func(m *MLSMessage)) *MLSMessage {
		m, _ := DecodeMLSMessage(pc.Message.Encode())
		f(m)
		return m
	}
	for _, c := range []struct {
		name string
		m    *MLSMessage
		want error
	}{
		{"future epoch", tamper(func(m *MLSMessage) { m.PublicMessage.Content.Epoch++ }), ErrFutureEpoch},
		{"past epoch", tamper(func(m *MLSMessage) { m.PublicMessage.Content.Epoch-- }), ErrStaleCommit},
		{"other group", tamper(func(m *MLSMessage) { m.PublicMessage.Content.GroupID = []byte("other") }), ErrWrongGroup},
		{"non-member", tamper(func(m *MLSMessage) { m.PublicMessage.Content.Sender.Index = 7 }), ErrNotMember},
		{"membership tag", tamper(func(m *MLSMessage) { m.PublicMessage.MembershipTag[0] ^= 1 }), ErrBadMembershipTag},
		{"signature", tamper(func(m *MLSMessage) {
			m.PublicMessage.Auth.Signature[0] ^= 1
			retag(alice.g, m)
		}), ErrBadSignature},
		{"confirmation tag", tamper(func(m *MLSMessage) {
			m.PublicMessage.Auth.ConfirmationTag[0] ^= 1
			retag(alice.g, m)
		}), ErrBadConfirmationTag},
	} {
		expectErr(t, bob, c.m, c.want, c.name)
	}
	if _, err := process(t, bob, pc.Message); err != nil {
		t.Fatal(err)
	}
	merge(t, alice)
}

// TestForgedPrivateMessage: a member that can derive a sender's keys but
// not sign for it cannot get a message accepted or burn the genuine one's
// key; the receiver's state does not change.
func TestForgedPrivateMessage(t *testing.T) {
	cs := newGroupOf(t, Config{}, "alice", "bob", "mallory")
	alice, bob, mallory := cs[0], cs[1], cs[2]
	// Mallory frames content as Alice's, signed with her own key, and
	// encrypts it with Alice's next key, which she can derive.
	fc := FramedContent{ContentType: ContentTypeApplication, ApplicationData: []byte("forged")}
	fc.GroupID, fc.Epoch = mallory.g.ctx.GroupID, mallory.g.ctx.Epoch
	fc.Sender = Sender{Type: SenderTypeMember, Index: uint32(alice.g.OwnLeaf())}
	ac := &AuthenticatedContent{WireFormat: WireFormatPrivateMessage, Content: fc}
	ac.Auth.Signature, _ = signContent(mallory.signer, ac.WireFormat, &ac.Content, mallory.g.ctxBytes)
	pm, err := toPrivate(mallory.g.suite, mallory.g.secretTree, mallory.g.secrets.senderData, ac, 0)
	if err != nil {
		t.Fatal(err)
	}
	forged := &MLSMessage{Version: MLS10, WireFormat: WireFormatPrivateMessage, PrivateMessage: pm}
	expectErr(t, bob, forged, ErrBadSignature, "forgery")
	wantText(t, bob, encrypt(t, alice, "genuine"), "genuine")
}

// TestRemovedMember: a removed member cannot read or write the epochs
// after its removal; it still reads what was sent before.
func TestRemovedMember(t *testing.T) {
	cs := newGroupOf(t, Config{}, "alice", "bob", "carol")
	alice, bob, carol := cs[0], cs[1], cs[2]
	before := encrypt(t, bob, "before the removal")
	pc := commit(t, alice, CommitOptions{Proposals: []Proposal{&RemoveProposal{Removed: carol.g.OwnLeaf()}}})
	merge(t, alice)
	deliver(t, pc.Message, bob)
	r, err := process(t, carol, pc.Message)
	if err != nil || !r.Commit.RemovedSelf || !carol.g.Removed() {
		t.Fatalf("carol: %+v %v", r, err)
	}
	carol.g = restore(t, carol.g, Config{})
	after := encrypt(t, alice, "after the removal")
	expectErr(t, carol, after, ErrRemoved, "new epoch at the removed member")
	wantText(t, carol, before, "before the removal")
	if _, err := carol.g.Encrypt([]byte("x"), nil, 0); !errors.Is(err, ErrRemoved) {
		t.Fatalf("encrypt after removal: %v", err)
	}
	if _, _, err := carol.g.Propose(&RemoveProposal{Removed: 0}, WireFormatPublicMessage); !errors.Is(err, ErrRemoved) {
		t.Fatalf("propose after removal: %v", err)
	}
	// What carol could still forge: a proposal in the new epoch from her
	// old leaf (no member there any more) and a Commit of her last epoch.
	fc := FramedContent{GroupID: alice.g.ctx.GroupID, Epoch: alice.g.Epoch(), Sender: Sender{Type: SenderTypeMember, Index: uint32(carol.g.OwnLeaf())},
		ContentType: ContentTypeProposal, Proposal: &RemoveProposal{Removed: 0}}
	ac := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: fc}
	ac.Auth.Signature, _ = signContent(carol.signer, ac.WireFormat, &fc, alice.g.ctxBytes)
	forged := &MLSMessage{Version: MLS10, WireFormat: WireFormatPublicMessage, PublicMessage: &PublicMessage{Content: fc, Auth: ac.Auth, MembershipTag: make([]byte, 32)}}
	expectErr(t, alice, forged, ErrNotMember, "proposal from the removed leaf")
	carol.g.removed = false // as if carol ignored her removal
	old := commit(t, carol, CommitOptions{ForcePath: true})
	expectErr(t, alice, old.Message, ErrStaleCommit, "commit of the removed member's last epoch")
}

// TestOwnMessages: copies of what a member sent come back as ErrOwnMessage
// (ErrOwnCommit for commits), in either wire format, and change nothing.
func TestOwnMessages(t *testing.T) {
	wireFormats(t, func(t *testing.T, wf WireFormat) {
		cs := newGroupOf(t, Config{}, "alice", "bob")
		alice := cs[0]
		app := encrypt(t, alice, "mine")
		expectErr(t, alice, app, ErrOwnMessage, "own application message")
		p, _ := propose(t, alice, &RemoveProposal{Removed: 1}, wf)
		expectErr(t, alice, p, ErrOwnMessage, "own proposal")
		pc := commit(t, alice, CommitOptions{WireFormat: wf})
		expectErr(t, alice, pc.Message, ErrOwnCommit, "own pending commit")
		merge(t, alice)
		expectErr(t, alice, pc.Message, ErrOwnCommit, "own merged commit")
		if !errors.Is(ErrOwnCommit, ErrOwnMessage) {
			t.Fatal("ErrOwnCommit does not match ErrOwnMessage")
		}
	})
}

// TestForwardSecrecyInEpoch: each message has its own generation; a key
// is deleted once used; late messages decrypt inside the window, not
// beyond; replays are rejected; too large a jump ahead is refused.
func TestForwardSecrecyInEpoch(t *testing.T) {
	cs := newGroupOf(t, Config{Ratchet: RatchetConfig{MaxForward: 100}}, "alice", "bob")
	alice, bob := cs[0], cs[1]
	var msgs []*MLSMessage
	gens := map[uint32]bool{}
	for i := range 40 {
		m := encrypt(t, alice, fmt.Sprint(i))
		sd, err := openSenderData(bob.g.suite, bob.g.secrets.senderData, m.PrivateMessage)
		if err != nil {
			t.Fatal(err)
		}
		if gens[sd.generation] {
			t.Fatalf("generation %d used twice", sd.generation)
		}
		gens[sd.generation] = true
		msgs = append(msgs, m)
	}
	ratchet := func() *hashRatchet { return &bob.g.secretTree.senders[alice.g.OwnLeaf()][applicationRatchet] }
	wantText(t, bob, msgs[39], "39")
	r := ratchet()
	if _, kept := r.keys[39]; kept || r.next != 40 {
		t.Fatalf("the used key of generation 39 is kept (next %d)", r.next)
	}
	if len(r.keys) != DefaultOutOfOrder {
		t.Fatalf("%d skipped keys kept, want the window of %d", len(r.keys), DefaultOutOfOrder)
	}
	wantText(t, bob, msgs[10], "10") // 29 behind: inside the window of 32
	if _, kept := ratchet().keys[10]; kept {
		t.Fatal("the used key of generation 10 is kept")
	}
	expectErr(t, bob, msgs[5], ErrGenerationTooOld, "34 behind")
	expectErr(t, bob, msgs[39], ErrReplay, "replay")
	expectErr(t, bob, msgs[10], ErrReplay, "replay of a late message")
	var last *MLSMessage
	for range 102 {
		last = encrypt(t, alice, "far ahead")
	}
	expectErr(t, bob, last, ErrGenerationTooNew, "a jump of 101 > 100")
}

// TestNoNonceReuse: every message is encrypted under its own key and nonce,
// and the reuse guard is applied as RFC 9420 §6.3.1 asks: the first four
// bytes of the generation's nonce XOR the random reuse_guard of the sender
// data.
func TestNoNonceReuse(t *testing.T) {
	s := suiteOrSkip(t, 1)
	secret := bytes.Repeat([]byte{7}, s.Nh())
	sds := bytes.Repeat([]byte{8}, s.Nh())
	tx := newSecretTree(s, RatchetConfig{}, secret, 2)
	rx := newSecretTree(s, RatchetConfig{MaxForward: 1 << 12}, secret, 2)
	signer, _ := s.GenerateSigner()
	seen := map[string]bool{}
	guards := map[[reuseGuardSize]byte]bool{}
	for i := range 600 {
		ct := ContentTypeApplication
		if i%3 == 0 {
			ct = ContentTypeProposal
		}
		fc := FramedContent{GroupID: []byte("g"), Sender: Sender{Type: SenderTypeMember, Index: 1}, ContentType: ct}
		if ct == ContentTypeProposal {
			fc.Proposal = &RemoveProposal{}
		}
		ac := &AuthenticatedContent{WireFormat: WireFormatPrivateMessage, Content: fc}
		ac.Auth.Signature, _ = signContent(signer, ac.WireFormat, &fc, nil)
		m, err := toPrivate(s, tx, sds, ac, 0)
		if err != nil {
			t.Fatal(err)
		}
		sd, err := openSenderData(s, sds, m)
		if err != nil {
			t.Fatal(err)
		}
		kn, adv, err := rx.get(sd.leaf, kindOf(ct), sd.generation)
		if err != nil {
			t.Fatal(err)
		}
		nonce := applyGuard(kn.nonce, sd.reuseGuard)
		for j := range nonce {
			want := kn.nonce[j]
			if j < reuseGuardSize {
				want ^= sd.reuseGuard[j]
			}
			if nonce[j] != want {
				t.Fatal("reuse guard not applied to the first four bytes only")
			}
		}
		id := string(kn.key) + string(nonce)
		if seen[id] || seen[string(nonce)] {
			t.Fatalf("message %d reuses a key and nonce", i)
		}
		seen[id], seen[string(nonce)] = true, true
		guards[sd.reuseGuard] = true
		rx.consume(adv)
	}
	if len(guards) < 590 {
		t.Fatalf("only %d distinct reuse guards in 600 messages", len(guards))
	}
}

// TestCommitSkipsInvalidProposals: a committer commits every valid cached
// proposal and skips the invalid ones (RFC 9420 §12.2), preferring a
// Remove over an Update of the same leaf and the most recent Update;
// the others accept the Commit.
func TestCommitSkipsInvalidProposals(t *testing.T) {
	cs := newGroupOf(t, Config{}, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := cs[0], cs[1], cs[2], cs[3]
	erin := newClient(t, testSuite, "erin")
	erinKP := erin.keyPackage(t, testSuite)
	badKP := *newClient(t, testSuite, "frank").keyPackage(t, testSuite).KeyPackage
	badKP.Signature = clone(badKP.Signature)
	badKP.Signature[0] ^= 1
	nonce := make([]byte, testSuiteNh)
	rand.Read(nonce)

	type sent struct {
		by   *client
		m    *MLSMessage
		ref  []byte
		keep bool
	}
	var all []sent
	send := func(by *client, p Proposal, keep bool) {
		m, ref := propose(t, by, p, WireFormatPublicMessage)
		all = append(all, sent{by, m, ref, keep})
	}
	update := func(by *client, keep bool) {
		m, ref, err := by.g.ProposeUpdate(WireFormatPublicMessage)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, sent{by, m, ref, keep})
	}
	update(carol, false) // carol is removed below
	send(bob, &RemoveProposal{Removed: carol.g.OwnLeaf()}, true)
	send(dave, &RemoveProposal{Removed: carol.g.OwnLeaf()}, false) // the same leaf again
	send(bob, &RemoveProposal{Removed: alice.g.OwnLeaf()}, false)  // the committer
	update(alice, false)                                           // the committer's own
	update(dave, false)                                            // superseded by dave's next one
	update(dave, true)
	send(bob, &AddProposal{KeyPackage: *erinKP.KeyPackage}, true)
	send(dave, &AddProposal{KeyPackage: *erinKP.KeyPackage}, false) // erin twice
	send(bob, &AddProposal{KeyPackage: badKP}, false)
	send(bob, &PreSharedKeyProposal{PSK: PreSharedKeyID{Type: PSKTypeExternal, PSKID: []byte("unknown"), PSKNonce: nonce}}, false)
	send(dave, &GroupContextExtensionsProposal{Extensions: Extensions{{Type: ExtensionTypeApplicationID, Data: []byte("1")}}}, false)
	send(bob, &GroupContextExtensionsProposal{Extensions: Extensions{{Type: ExtensionTypeApplicationID, Data: []byte("2")}}}, true)
	members := []*client{alice, bob, carol, dave}
	for _, s := range all {
		for _, c := range members {
			if c != s.by {
				deliver(t, s.m, c)
			}
		}
	}
	if got := len(alice.g.Proposals()); got != len(all) {
		t.Fatalf("%d proposals cached, want %d", got, len(all))
	}
	// Committing an invalid one by reference fails and leaves nothing
	// pending.
	if _, err := alice.g.Commit(CommitOptions{ByReference: [][]byte{all[2].ref, all[1].ref}}); !errors.Is(err, ErrInvalidProposal) || alice.g.PendingCommit() != nil {
		t.Fatalf("two removes of one leaf by reference: err = %v", err)
	}
	pc := commit(t, alice, CommitOptions{RatchetTreeInWelcome: true})
	if len(pc.Skipped) != len(all)-4 {
		t.Fatalf("%d skipped, want %d: %v", len(pc.Skipped), len(all)-4, pc.Skipped)
	}
	res := merge(t, alice)
	for _, s := range all {
		included := false
		for _, p := range res.Proposals {
			included = included || bytes.Equal(p.Ref, s.ref)
		}
		if included != s.keep {
			t.Errorf("proposal %T from %s: included = %v, want %v", s.m.PublicMessage.Content.Proposal, s.by.name, included, s.keep)
		}
	}
	for _, c := range []*client{bob, dave} {
		r, err := process(t, c, pc.Message)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c == bob && len(r.Commit.Retry) != 3 { // his Remove of alice, bad Add and unknown PSK
			t.Fatalf("bob's retry list: %v", r.Commit.Retry)
		}
	}
	erin.g, _ = JoinWelcome(pc.Welcome, erinKP, nil, Config{})
	for _, c := range []*client{bob, dave, erin} {
		if c.g == nil || !bytes.Equal(c.g.EpochAuthenticator(), alice.g.EpochAuthenticator()) {
			t.Fatalf("%s disagrees", c.name)
		}
	}
	if ext, _ := alice.g.Extensions().Find(ExtensionTypeApplicationID); string(ext) != "2" {
		t.Fatalf("group context extension %q, want the last one", ext)
	}
}

const testSuiteNh = 32

// TestProposalCache: the cache lists proposals with their senders, a
// dropped proposal is unknown to Commits naming it, and a member learns
// which of its proposals a Commit left out.
func TestProposalCache(t *testing.T) {
	cs := newGroupOf(t, Config{}, "alice", "bob", "carol")
	alice, bob, carol := cs[0], cs[1], cs[2]
	m, ref := propose(t, bob, &RemoveProposal{Removed: carol.g.OwnLeaf()}, WireFormatPrivateMessage)
	deliver(t, m, alice, carol)
	expectErr(t, alice, m, ErrReplay, "the same proposal twice")
	ps := alice.g.Proposals()
	if len(ps) != 1 || !bytes.Equal(ps[0].Ref, ref) || ps[0].Sender != (Sender{Type: SenderTypeMember, Index: uint32(bob.g.OwnLeaf())}) {
		t.Fatalf("cache %+v", ps)
	}
	if !carol.g.DropProposal(ref) || carol.g.DropProposal(ref) {
		t.Fatal("drop")
	}
	pc := commit(t, alice, CommitOptions{})
	merge(t, alice)
	expectErr(t, carol, pc.Message, ErrUnknownProposal, "commit naming a dropped proposal")
	r, err := process(t, bob, pc.Message)
	if err != nil || len(r.Commit.Proposals) != 1 || !bytes.Equal(r.Commit.Proposals[0].Ref, ref) || len(r.Commit.Retry) != 0 {
		t.Fatalf("bob: %+v %v", r, err)
	}
	if len(r.Commit.Removed) != 1 || r.Commit.Removed[0].Credential.Equal(&bob.cred) || string(r.Commit.Removed[0].Identity()) != "carol" {
		t.Fatalf("removed %+v", r.Commit.Removed)
	}
	// A commit without bob's proposal hands it back to him.
	m, _ = propose(t, bob, &PreSharedKeyProposal{PSK: PreSharedKeyID{Type: PSKTypeResumption, Usage: ResumptionPSKUsageApplication,
		PSKGroupID: bob.g.GroupID(), PSKEpoch: 1, PSKNonce: make([]byte, testSuiteNh)}}, WireFormatPublicMessage)
	deliver(t, m, alice)
	pc = commit(t, alice, CommitOptions{SkipCached: true})
	merge(t, alice)
	if r, err = process(t, bob, pc.Message); err != nil || len(r.Commit.Retry) != 1 {
		t.Fatalf("bob: %+v %v", r, err)
	}
}

// TestEd25519Identity: members identified by their Ed25519 key, checked by
// ValidateEd25519Identity; another credential is refused.
func TestEd25519Identity(t *testing.T) {
	cfg := Config{ValidateCredential: ValidateEd25519Identity}
	mk := func() (cipher.Signer, Credential, ed25519.PublicKey) {
		pub, priv, _ := ed25519.GenerateKey(nil)
		signer, cred, err := Ed25519Identity(priv)
		if err != nil {
			t.Fatal(err)
		}
		return signer, cred, pub
	}
	as, ac, apub := mk()
	g, err := NewGroup(testSuite, randomID(t), as, ac, LeafOptions{}, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	bs, bc, bpub := mk()
	kp, err := NewKeyPackage(testSuite, bs, bc, LeafOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Commit(CommitOptions{Proposals: []Proposal{&AddProposal{KeyPackage: *kp.KeyPackage}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.MergePendingCommit(); err != nil {
		t.Fatal(err)
	}
	ms := g.Members()
	if len(ms) != 2 || !bytes.Equal(ms[0].Identity(), apub) || !bytes.Equal(ms[1].Identity(), bpub) || !bytes.Equal(ms[1].SignatureKey, bpub) {
		t.Fatalf("members %+v", ms)
	}
	// A credential naming another key than the one that signs.
	cs, _, _ := mk()
	bad, err := NewKeyPackage(testSuite, cs, bc, LeafOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Commit(CommitOptions{Proposals: []Proposal{&AddProposal{KeyPackage: *bad.KeyPackage}}}); !errors.Is(err, ErrIdentity) || !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("add of a key package with a foreign identity: err = %v", err)
	}
	if _, _, err := Ed25519Identity(ed25519.PrivateKey{1, 2}); err == nil {
		t.Fatal("short key accepted")
	}
}

// TestGroupContextExtensions: an application's own extension in the group
// context reaches joiners and survives changes and persistence; a client
// that does not list its type cannot be added.
func TestGroupContextExtensions(t *testing.T) {
	const groupName ExtensionType = 0xf0a0
	alice, bob, carol := newClient(t, testSuite, "alice"), newClient(t, testSuite, "bob"), newClient(t, testSuite, "carol")
	var err error
	alice.g, err = NewGroup(testSuite, randomID(t), alice.signer, alice.cred, LeafOptions{}, Extensions{{Type: groupName, Data: []byte("hackathon")}}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	bobKP, err := NewKeyPackage(testSuite, bob.signer, bob.cred, LeafOptions{ExtensionTypes: []ExtensionType{groupName}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.g.Commit(CommitOptions{Proposals: []Proposal{&AddProposal{KeyPackage: *carol.keyPackage(t, testSuite).KeyPackage}}}); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("add of a client without the extension type: err = %v", err)
	}
	commitAndDeliver(t, alice, CommitOptions{Proposals: []Proposal{&AddProposal{KeyPackage: *bobKP.KeyPackage}}}, nil,
		map[*client]*KeyPackageBundle{bob: bobKP}, Config{})
	if name, ok := bob.g.Extensions().Find(groupName); !ok || string(name) != "hackathon" {
		t.Fatalf("joiner reads %q", name)
	}
	commitAndDeliver(t, bob, CommitOptions{Proposals: []Proposal{&GroupContextExtensionsProposal{Extensions: Extensions{{Type: groupName, Data: []byte("field site")}}}}},
		[]*client{alice}, nil, Config{})
	alice.g = restore(t, alice.g, Config{})
	if name, _ := alice.g.Extensions().Find(groupName); string(name) != "field site" {
		t.Fatalf("after the change: %q", name)
	}
}

// TestKeyPackageBundle: bundles persist; a single-use one is consumed by
// its join, a last-resort one is not.
func TestKeyPackageBundle(t *testing.T) {
	bob := newClient(t, testSuite, "bob")
	kp, err := NewKeyPackage(testSuite, bob.signer, bob.cred, LeafOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := kp.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalKeyPackageBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := back.MarshalBinary(); !bytes.Equal(again, data) || back.LastResort() {
		t.Fatal("bundle does not round-trip")
	}
	for i := range []int{2, len(data) - 1} {
		bad := bytes.Clone(data)
		bad[len(bad)-1-i] ^= 1 // in the signature key
		if _, err := UnmarshalKeyPackageBundle(bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("corrupted bundle: err = %v", err)
		}
	}

	welcome := func(kp *KeyPackage) *Welcome {
		alice := newClient(t, testSuite, "alice")
		alice.g, err = NewGroup(testSuite, randomID(t), alice.signer, alice.cred, LeafOptions{}, nil, Config{})
		if err != nil {
			t.Fatal(err)
		}
		pc := commit(t, alice, CommitOptions{Proposals: []Proposal{&AddProposal{KeyPackage: *kp}}, RatchetTreeInWelcome: true})
		merge(t, alice)
		return pc.Welcome
	}
	w := welcome(back.KeyPackage)
	if ref, _ := back.Ref(); !bytes.Equal(w.KeyPackageRefs()[0], ref) {
		t.Fatal("welcome does not name the bundle's ref")
	}
	if _, err := JoinWelcome(w, back, nil, Config{}); err != nil {
		t.Fatal(err)
	}
	if _, err := JoinWelcome(welcome(back.KeyPackage), back, nil, Config{}); !errors.Is(err, ErrKeyPackageUsed) {
		t.Fatalf("second use of a single-use bundle: err = %v", err)
	}
	if _, err := back.MarshalBinary(); !errors.Is(err, ErrKeyPackageUsed) {
		t.Fatalf("persisting a used bundle: err = %v", err)
	}

	lr, err := NewKeyPackage(testSuite, bob.signer, bob.cred, LeafOptions{}, Extensions{LastResort()})
	if err != nil {
		t.Fatal(err)
	}
	if !lr.LastResort() {
		t.Fatal("not flagged last resort")
	}
	for range 2 {
		if _, err := JoinWelcome(welcome(lr.KeyPackage), lr, nil, Config{}); err != nil {
			t.Fatalf("last-resort join: %v", err)
		}
	}
}

// TestPersistMidConversation: every member saves and restores its state at
// awkward moments — a Commit pending, proposals cached, past epochs kept —
// and the conversation continues exactly.
func TestPersistMidConversation(t *testing.T) {
	cs := newGroupOf(t, Config{}, "alice", "bob", "carol")
	alice, bob, carol := cs[0], cs[1], cs[2]
	late := encrypt(t, carol, "late")
	up, _, err := bob.g.ProposeUpdate(WireFormatPrivateMessage)
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, up, alice, carol)
	pc := commit(t, alice, CommitOptions{WireFormat: WireFormatPrivateMessage})
	for _, c := range cs {
		c.g = restore(t, c.g, Config{})
	}
	if alice.g.PendingCommit() == nil || !bytes.Equal(alice.g.PendingCommit().Message.Encode(), pc.Message.Encode()) {
		t.Fatal("pending commit lost")
	}
	res := merge(t, alice)
	if len(res.Proposals) != 1 {
		t.Fatalf("restored pending commit applied %d proposals", len(res.Proposals))
	}
	deliver(t, pc.Message, bob, carol)
	for _, c := range cs {
		c.g = restore(t, c.g, Config{})
	}
	wantText(t, bob, late, "late")
	wantText(t, alice, encrypt(t, bob, "with bob's new key"), "with bob's new key")
	if !bytes.Equal(alice.g.EpochAuthenticator(), bob.g.EpochAuthenticator()) {
		t.Fatal("disagree")
	}
}

// TestExternalResync: a member that lost its state rejoins by external
// Commit and replaces its old leaf in the same Commit.
func TestExternalResync(t *testing.T) {
	cs := newGroupOf(t, Config{}, "alice", "bob", "carol")
	alice, bob, carol := cs[0], cs[1], cs[2]
	gi, err := alice.g.GroupInfo(GroupInfoOptions{RatchetTree: true, ExternalPub: true})
	if err != nil {
		t.Fatal(err)
	}
	fresh := &client{name: "carol again", signer: carol.signer, cred: carol.cred}
	g, pc, err := JoinExternal(gi, nil, fresh.signer, fresh.cred, ExternalJoinOptions{RemovePrior: true}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Encrypt([]byte("x"), nil, 0); !errors.Is(err, ErrWrongEpoch) {
		t.Fatalf("before the merge: %v", err)
	}
	fresh.g = restore(t, g, Config{})
	merge(t, fresh)
	if len(fresh.g.past) != 0 {
		t.Fatal("the joiner keeps the keys of an epoch it was not in")
	}
	for _, c := range []*client{alice, bob} {
		r, err := process(t, c, pc.Message)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Commit.Removed) != 1 || r.Commit.Removed[0].Leaf != carol.g.OwnLeaf() || len(r.Commit.Added) != 1 {
			t.Fatalf("%s: %+v", c.name, r.Commit)
		}
	}
	if r, err := process(t, carol, pc.Message); err != nil || !r.Commit.RemovedSelf {
		t.Fatalf("old carol: %+v %v", r, err)
	}
	if len(alice.g.Members()) != 3 {
		t.Fatal("member count")
	}
	wantText(t, fresh, encrypt(t, bob, "welcome back"), "welcome back")
}

// TestSuccessorChecks: a branch Welcome joins only through the group it
// branches from, and only with members of that group.
func TestSuccessorChecks(t *testing.T) {
	cs := newGroupOf(t, Config{}, "alice", "bob")
	alice, bob := cs[0], cs[1]
	bobKP := bob.keyPackage(t, testSuite)
	ng, w, err := alice.g.Branch(randomID(t), nil, []*KeyPackage{bobKP.KeyPackage}, SuccessorOptions{RatchetTreeInWelcome: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := JoinWelcome(w, bobKP, nil, Config{}); !errors.Is(err, ErrUnknownPSK) {
		t.Fatalf("branch welcome through JoinWelcome: err = %v", err)
	}
	other := newGroupOf(t, Config{}, "x", "y")[0]
	if _, err := other.g.JoinSuccessor(w, bobKP, nil, Config{}); !errors.Is(err, ErrUnknownPSK) {
		t.Fatalf("branch welcome through another group: err = %v", err)
	}
	bg, err := bob.g.JoinSuccessor(w, bobKP, nil, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bg.EpochAuthenticator(), ng.EpochAuthenticator()) || bg.Epoch() != 1 {
		t.Fatal("branch disagrees")
	}
	// A branch that brings in a stranger is refused.
	stranger := newClient(t, testSuite, "stranger").keyPackage(t, testSuite)
	bobKP = bob.keyPackage(t, testSuite)
	_, w, err = alice.g.Branch(randomID(t), nil, []*KeyPackage{bobKP.KeyPackage, stranger.KeyPackage}, SuccessorOptions{RatchetTreeInWelcome: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.g.JoinSuccessor(w, bobKP, nil, Config{}); !errors.Is(err, ErrNotSuccessor) {
		t.Fatalf("branch with a stranger: err = %v", err)
	}
	if bobKP.InitPriv == nil {
		t.Fatal("a refused join consumed the key package")
	}
}

// TestReinitChecks: a re-initialized group must match the ReInit and keep
// every member of the old group; to another suite it needs a signer of it.
func TestReinitChecks(t *testing.T) {
	cs := newGroupOf(t, Config{}, "alice", "bob", "carol")
	alice, bob, carol := cs[0], cs[1], cs[2]
	const newSuite = cipher.X25519_CHACHA20POLY1305_SHA256_Ed25519
	ri := &ReInitProposal{GroupID: randomID(t), Version: MLS10, CipherSuite: newSuite}
	commitAndDeliver(t, alice, CommitOptions{Proposals: []Proposal{ri}}, []*client{bob, carol}, nil, Config{})
	for _, c := range cs {
		if c.g.ReInit() == nil {
			t.Fatalf("%s: no ReInit", c.name)
		}
		if _, err := c.g.Encrypt([]byte("x"), nil, 0); !errors.Is(err, ErrWrongEpoch) {
			t.Fatalf("%s: the old group still sends: %v", c.name, err)
		}
	}
	if _, _, err := alice.g.Reinitialize(nil, SuccessorOptions{}); err == nil {
		t.Fatal("reinitialized to another suite with the old signer")
	}
	kp := func(c *client) *KeyPackageBundle {
		s, _ := cipher.Lookup(newSuite)
		signer, _ := s.GenerateSigner()
		b, err := NewKeyPackage(newSuite, signer, c.cred, LeafOptions{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	aliceKP, bobKP, carolKP := kp(alice), kp(bob), kp(carol)
	// Carol left out: bob refuses a group that lost a member.
	_, w, err := alice.g.Reinitialize([]*KeyPackage{bobKP.KeyPackage}, SuccessorOptions{Signer: aliceKP.Signer, RatchetTreeInWelcome: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.g.JoinSuccessor(w, bobKP, nil, Config{}); !errors.Is(err, ErrNotSuccessor) {
		t.Fatalf("a member missing: err = %v", err)
	}
	// A welcomer that got the ReInit wrong.
	saved := *alice.g.reinit
	alice.g.reinit.GroupID = []byte("another group")
	_, w, err = alice.g.Reinitialize([]*KeyPackage{bobKP.KeyPackage, carolKP.KeyPackage}, SuccessorOptions{Signer: aliceKP.Signer, RatchetTreeInWelcome: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.g.JoinSuccessor(w, bobKP, nil, Config{}); !errors.Is(err, ErrNotSuccessor) {
		t.Fatalf("group ID not the ReInit's: err = %v", err)
	}
	*alice.g.reinit = saved
	ng, w, err := alice.g.Reinitialize([]*KeyPackage{bobKP.KeyPackage, carolKP.KeyPackage}, SuccessorOptions{Signer: aliceKP.Signer, RatchetTreeInWelcome: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		c  *client
		kp *KeyPackageBundle
	}{{bob, bobKP}, {carol, carolKP}} {
		g, err := c.c.g.JoinSuccessor(w, c.kp, nil, Config{})
		if err != nil {
			t.Fatalf("%s: %v", c.c.name, err)
		}
		if g.CipherSuite() != newSuite || !bytes.Equal(g.GroupID(), ri.GroupID) || !bytes.Equal(g.EpochAuthenticator(), ng.EpochAuthenticator()) {
			t.Fatalf("%s: the new group disagrees", c.c.name)
		}
	}
}
