package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/quicproquo/qpq/cmd/mls-interop/mlspb"
)

// A runner for the scenario scripts of the IETF interop harness
// (testdata/*.json, from mls-implementations/interop/configs), with the
// semantics of its test-runner: each step names an action and an actor;
// later steps refer to the outputs of earlier ones by step index (a key
// package, a proposal, a PSK, a ciphertext); every member handling a
// Commit, and every joiner, must arrive at the committer's epoch
// authenticator. Actors are assigned to the clients round-robin in the
// order they first appear.

// step is one script step; which fields are set depends on the action.
type step struct {
	Action  string   `json:"action"`
	Actor   string   `json:"actor"`
	Members []string `json:"members"`
	Joiners []string `json:"joiners"`
	Joiner  string   `json:"joiner"`
	Clients []string `json:"clients"`
	Signer  string   `json:"signer"`
	Member  string   `json:"member"`

	KeyPackage  int           `json:"keyPackage"`
	Removed     string        `json:"removed"`
	PskID       int           `json:"pskID"`
	EpochID     uint64        `json:"epochID"`
	Extensions  []extension   `json:"extensions"`
	ByReference []int         `json:"byReference"`
	ByValue     []description `json:"byValue"`
	Description description   `json:"description"`
	PSKs        []int         `json:"psks"`
	RemovePrior bool          `json:"removePrior"`
	Welcome     int           `json:"welcome"`
	Commit      int           `json:"commit"`

	// The files spell these both ways; the runner honors both.
	ForcePath     bool `json:"force_path"`
	ForcePathC    bool `json:"forcePath"`
	ExternalTree  bool `json:"external_tree"`
	ExternalTreeC bool `json:"externalTree"`

	AuthenticatedData string `json:"authenticatedData"`
	Plaintext         string `json:"plaintext"`
	Ciphertext        int    `json:"ciphertext"`

	Proposer               string `json:"proposer"`
	Committer              string `json:"committer"`
	Welcomer               string `json:"welcomer"`
	ChangeCipherSuite      bool   `json:"changeCipherSuite"`
	ChangeGroupID          bool   `json:"changeGroupID"`
	ExternalReinitProposal int    `json:"externalReinitProposal"`
}

func (s *step) forcePath() bool    { return s.ForcePath || s.ForcePathC }
func (s *step) externalTree() bool { return s.ExternalTree || s.ExternalTreeC }

type extension struct {
	Type uint32 `json:"extension_type"`
	Data []byte `json:"extension_data"`
}

type description struct {
	ProposalType      string      `json:"proposalType"`
	KeyPackage        int         `json:"keyPackage"`
	Removed           string      `json:"removed"`
	PskID             int         `json:"pskID"`
	EpochID           uint64      `json:"epochID"`
	Extensions        []extension `json:"extensions"`
	ChangeGroupID     bool        `json:"changeGroupID"`
	ChangeCipherSuite bool        `json:"changeCipherSuite"`
}

// actors lists the actors of a script in the order they first appear.
func actors(script []step) []string {
	var out []string
	seen := map[string]bool{}
	add := func(names ...string) {
		for _, n := range names {
			if n != "" && !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	for _, s := range script {
		add(s.Actor, s.Joiner, s.Signer, s.Proposer, s.Committer, s.Welcomer)
		add(s.Members...)
		add(s.Joiners...)
		add(s.Clients...)
	}
	return out
}

// scriptRun is one run of a script: a cipher suite, a handshake wire
// format and an assignment of actors to clients.
type scriptRun struct {
	ctx      context.Context
	suite    uint32
	suites   []uint32 // supported by every client, for a cipher suite change
	encrypt  bool
	clients  map[string]mlspb.MLSClientClient
	state    map[string]uint32
	tx       map[string]uint32
	signer   map[string]uint32
	out      []map[string][]byte // per step: what later steps refer to
	last     []string            // actors that took part in the last change of the group
	states   []ownedState        // every state handed out, to free at the end
	rpcCount int
}

type ownedState struct {
	c  mlspb.MLSClientClient
	id uint32
}

// setState records actor's current state.
func (r *scriptRun) setState(actor string, id uint32) {
	r.state[actor] = id
	r.states = append(r.states, ownedState{r.clients[actor], id})
}

// free releases every state the run made on the clients.
func (r *scriptRun) free() {
	for _, s := range r.states {
		s.c.Free(r.ctx, &mlspb.FreeRequest{StateId: s.id})
	}
}

func newScriptRun(ctx context.Context, script []step, clients []mlspb.MLSClientClient, suite uint32, suites []uint32, encrypt bool) *scriptRun {
	r := &scriptRun{
		ctx: ctx, suite: suite, suites: suites, encrypt: encrypt,
		clients: map[string]mlspb.MLSClientClient{},
		state:   map[string]uint32{}, tx: map[string]uint32{}, signer: map[string]uint32{},
		out: make([]map[string][]byte, len(script)),
	}
	for i, a := range actors(script) {
		r.clients[a] = clients[i%len(clients)]
	}
	for i := range r.out {
		r.out[i] = map[string][]byte{}
	}
	return r
}

// run executes the script and then checks that the members of the group
// as last changed agree on its state (StateAuth).
func (r *scriptRun) run(script []step) error {
	defer r.free()
	for i := range script {
		if err := r.step(i, &script[i]); err != nil {
			js, _ := json.Marshal(script[i])
			return fmt.Errorf("step %d (%s by %s): %w\n%s", i, script[i].Action, script[i].Actor, err, js)
		}
	}
	return r.checkStateAuth()
}

func (r *scriptRun) get(i int, key string) ([]byte, error) {
	if i < 0 || i >= len(r.out) {
		return nil, fmt.Errorf("step %d out of range", i)
	}
	v, ok := r.out[i][key]
	if !ok {
		return nil, fmt.Errorf("step %d has no %s", i, key)
	}
	return v, nil
}

func (r *scriptRun) client(actor string) (mlspb.MLSClientClient, error) {
	c, ok := r.clients[actor]
	if !ok {
		return nil, fmt.Errorf("unknown actor %q", actor)
	}
	r.rpcCount++
	return c, nil
}

// agree checks that who arrived at the epoch authenticator want.
func agree(who string, got, want []byte) error {
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s disagrees on the epoch authenticator", who)
	}
	return nil
}

func (r *scriptRun) checkStateAuth() error {
	var first []byte
	for _, a := range r.last {
		c, err := r.client(a)
		if err != nil {
			return err
		}
		resp, err := c.StateAuth(r.ctx, &mlspb.StateAuthRequest{StateId: r.state[a]})
		if err != nil {
			return fmt.Errorf("state auth of %s: %w", a, err)
		}
		if first == nil {
			first = resp.StateAuthSecret
		} else if !bytes.Equal(first, resp.StateAuthSecret) {
			return fmt.Errorf("%s and %s disagree on the state auth secret", r.last[0], a)
		}
	}
	return nil
}

func (r *scriptRun) groupID(change bool) ([]byte, error) {
	id, err := r.get(0, "group_id")
	if err != nil {
		return nil, err
	}
	if change {
		id = append(bytes.Clone(id), "++"...)
	}
	return id, nil
}

// changeCipherSuite switches the run to another suite every client
// supports (the next one in the list).
func (r *scriptRun) changeCipherSuite() error {
	i := slices.Index(r.suites, r.suite)
	if len(r.suites) < 2 || i < 0 {
		return fmt.Errorf("no other cipher suite to change to")
	}
	r.suite = r.suites[(i+1)%len(r.suites)]
	return nil
}

func protoExtensions(in []extension) []*mlspb.Extension {
	out := make([]*mlspb.Extension, len(in))
	for i, e := range in {
		out[i] = &mlspb.Extension{ExtensionType: e.Type, ExtensionData: e.Data}
	}
	return out
}

func (r *scriptRun) description(d *description) (*mlspb.ProposalDescription, error) {
	pd := &mlspb.ProposalDescription{ProposalType: []byte(d.ProposalType)}
	var err error
	switch d.ProposalType {
	case "add":
		pd.KeyPackage, err = r.get(d.KeyPackage, "key_package")
	case "remove":
		pd.RemovedId = []byte(d.Removed)
	case "externalPSK":
		pd.PskId, err = r.get(d.PskID, "psk_id")
	case "resumptionPSK":
		pd.EpochId = d.EpochID
	case "groupContextExtensions":
		pd.Extensions = protoExtensions(d.Extensions)
	case "reinit":
		pd.Extensions = protoExtensions(d.Extensions)
		if d.ChangeCipherSuite {
			if err = r.changeCipherSuite(); err != nil {
				return nil, err
			}
		}
		pd.CipherSuite = r.suite
		pd.GroupId, err = r.groupID(d.ChangeGroupID)
	default:
		err = fmt.Errorf("unknown proposal type %q", d.ProposalType)
	}
	return pd, err
}

func (r *scriptRun) proposals(idx []int) ([][]byte, error) {
	out := make([][]byte, len(idx))
	for i, x := range idx {
		var err error
		if out[i], err = r.get(x, "proposal"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (r *scriptRun) createKeyPackage(actor string) (*mlspb.CreateKeyPackageResponse, error) {
	c, err := r.client(actor)
	if err != nil {
		return nil, err
	}
	return c.CreateKeyPackage(r.ctx, &mlspb.CreateKeyPackageRequest{CipherSuite: r.suite, Identity: []byte(actor)})
}

// join has each joiner join from a Welcome and checks it agrees with want.
func (r *scriptRun) join(joiners []string, welcome, tree, want []byte) error {
	for _, j := range joiners {
		txID, ok := r.tx[j]
		if !ok {
			return fmt.Errorf("no key package of %s", j)
		}
		c, err := r.client(j)
		if err != nil {
			return err
		}
		resp, err := c.JoinGroup(r.ctx, &mlspb.JoinGroupRequest{
			TransactionId: txID, Welcome: welcome, EncryptHandshake: r.encrypt, Identity: []byte(j), RatchetTree: tree,
		})
		if err != nil {
			return fmt.Errorf("join of %s: %w", j, err)
		}
		if err := agree("joiner "+j, resp.EpochAuthenticator, want); err != nil {
			return err
		}
		r.setState(j, resp.StateId)
	}
	return nil
}

// handleCommit has each member process a Commit (after the proposals it
// names by reference) and checks it agrees with want.
func (r *scriptRun) handleCommit(members []string, proposals [][]byte, commit, want []byte) error {
	for _, m := range members {
		c, err := r.client(m)
		if err != nil {
			return err
		}
		resp, err := c.HandleCommit(r.ctx, &mlspb.HandleCommitRequest{StateId: r.state[m], Proposal: proposals, Commit: commit})
		if err != nil {
			return fmt.Errorf("commit at %s: %w", m, err)
		}
		if err := agree("member "+m, resp.EpochAuthenticator, want); err != nil {
			return err
		}
		r.setState(m, resp.StateId)
	}
	return nil
}

// commit has actor create a Commit and merge it; it returns the Commit,
// the Welcome, the ratchet tree for joiners (with an external tree) and
// the new epoch authenticator.
func (r *scriptRun) commit(i int, s *step) (commit, welcome, tree, auth []byte, err error) {
	byRef, err := r.proposals(s.ByReference)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	req := &mlspb.CommitRequest{StateId: r.state[s.Actor], ByReference: byRef, ForcePath: s.forcePath(), ExternalTree: s.externalTree()}
	for j := range s.ByValue {
		d, err := r.description(&s.ByValue[j])
		if err != nil {
			return nil, nil, nil, nil, err
		}
		req.ByValue = append(req.ByValue, d)
	}
	c, err := r.client(s.Actor)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	resp, err := c.Commit(r.ctx, req)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("commit: %w", err)
	}
	r.out[i]["commit"], r.out[i]["welcome"] = resp.Commit, resp.Welcome
	if s.externalTree() {
		r.out[i]["ratchet_tree"] = resp.RatchetTree
	}
	merged, err := c.HandlePendingCommit(r.ctx, &mlspb.HandlePendingCommitRequest{StateId: r.state[s.Actor]})
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("merge: %w", err)
	}
	r.setState(s.Actor, merged.StateId)
	r.out[i]["epoch_authenticator"] = merged.EpochAuthenticator
	var t []byte
	if s.externalTree() {
		t = resp.RatchetTree
	}
	return resp.Commit, resp.Welcome, t, merged.EpochAuthenticator, nil
}

func (r *scriptRun) step(i int, s *step) error {
	switch s.Action {
	case "createGroup":
		return r.createGroup(i, s)
	case "createKeyPackage":
		resp, err := r.createKeyPackage(s.Actor)
		if err != nil {
			return err
		}
		r.tx[s.Actor] = resp.TransactionId
		r.out[i]["key_package"] = resp.KeyPackage
		return nil
	case "joinGroup":
		welcome, err := r.get(s.Welcome, "welcome")
		if err != nil {
			return err
		}
		tx, ok := r.tx[s.Actor]
		if !ok {
			return fmt.Errorf("no key package of %s", s.Actor)
		}
		c, err := r.client(s.Actor)
		if err != nil {
			return err
		}
		resp, err := c.JoinGroup(r.ctx, &mlspb.JoinGroupRequest{TransactionId: tx, Welcome: welcome, EncryptHandshake: r.encrypt, Identity: []byte(s.Actor)})
		if err != nil {
			return err
		}
		r.setState(s.Actor, resp.StateId)
		return nil
	case "externalJoin":
		return r.externalJoin(i, s)
	case "installExternalPSK":
		id, secret := make([]byte, 32), make([]byte, 32)
		rand.Read(id)
		rand.Read(secret)
		r.out[i]["psk_id"], r.out[i]["psk_secret"] = id, secret
		for _, name := range s.Clients {
			target, ok := r.state[name]
			if !ok {
				target = r.tx[name]
			}
			c, err := r.client(name)
			if err != nil {
				return err
			}
			if _, err := c.StorePSK(r.ctx, &mlspb.StorePSKRequest{StateOrTransactionId: target, PskId: id, PskSecret: secret}); err != nil {
				return fmt.Errorf("store PSK at %s: %w", name, err)
			}
		}
		return nil
	case "groupInfo":
		c, err := r.client(s.Actor)
		if err != nil {
			return err
		}
		resp, err := c.GroupInfo(r.ctx, &mlspb.GroupInfoRequest{StateId: r.state[s.Actor], ExternalTree: s.externalTree()})
		if err != nil {
			return err
		}
		r.out[i]["group_info"], r.out[i]["ratchet_tree"] = resp.GroupInfo, resp.RatchetTree
		return nil
	case "addProposal", "updateProposal", "removeProposal", "externalPSKProposal", "resumptionPSKProposal", "groupContextExtensionsProposal":
		return r.propose(i, s)
	case "fullCommit":
		commit, welcome, tree, auth, err := r.commit(i, s)
		if err != nil {
			return err
		}
		byRef, err := r.proposals(s.ByReference)
		if err != nil {
			return err
		}
		if err := r.handleCommit(s.Members, byRef, commit, auth); err != nil {
			return err
		}
		if err := r.join(s.Joiners, welcome, tree, auth); err != nil {
			return err
		}
		r.last = append(append([]string{s.Actor}, s.Members...), s.Joiners...)
		return nil
	case "commit":
		_, _, _, _, err := r.commit(i, s)
		return err
	case "handleCommit":
		commit, err := r.get(s.Commit, "commit")
		if err != nil {
			return err
		}
		want, err := r.get(s.Commit, "epoch_authenticator")
		if err != nil {
			return err
		}
		byRef, err := r.proposals(s.ByReference)
		if err != nil {
			return err
		}
		return r.handleCommit([]string{s.Actor}, byRef, commit, want)
	case "protect":
		c, err := r.client(s.Actor)
		if err != nil {
			return err
		}
		ad, pt := []byte(s.AuthenticatedData), []byte(s.Plaintext)
		resp, err := c.Protect(r.ctx, &mlspb.ProtectRequest{StateId: r.state[s.Actor], AuthenticatedData: ad, Plaintext: pt})
		if err != nil {
			return err
		}
		r.out[i]["authenticated_data"], r.out[i]["plaintext"], r.out[i]["ciphertext"] = ad, pt, resp.Ciphertext
		return nil
	case "unprotect":
		return r.unprotect(s)
	case "reinit":
		return r.reinit(s)
	case "branch":
		return r.branch(s)
	case "newMemberAddProposal":
		return r.newMemberAddProposal(i, s)
	case "addExternalSigner":
		return r.addExternalSigner(i, s)
	case "externalSignerProposal":
		return r.externalSignerProposal(i, s)
	}
	return fmt.Errorf("unknown action %q", s.Action)
}

func (r *scriptRun) createGroup(i int, s *step) error {
	id := make([]byte, 16)
	rand.Read(id)
	groupID := []byte(hex.EncodeToString(id))
	c, err := r.client(s.Actor)
	if err != nil {
		return err
	}
	resp, err := c.CreateGroup(r.ctx, &mlspb.CreateGroupRequest{GroupId: groupID, CipherSuite: r.suite, EncryptHandshake: r.encrypt, Identity: []byte(s.Actor)})
	if err != nil {
		return err
	}
	r.setState(s.Actor, resp.StateId)
	r.out[i]["group_id"] = groupID
	r.last = []string{s.Actor}
	if len(s.Members) == 0 {
		return nil
	}
	// The members join by one Commit of Adds by value.
	req := &mlspb.CommitRequest{StateId: resp.StateId}
	for _, m := range s.Members {
		kp, err := r.createKeyPackage(m)
		if err != nil {
			return err
		}
		r.tx[m] = kp.TransactionId
		req.ByValue = append(req.ByValue, &mlspb.ProposalDescription{ProposalType: []byte("add"), KeyPackage: kp.KeyPackage})
	}
	cr, err := c.Commit(r.ctx, req)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	merged, err := c.HandlePendingCommit(r.ctx, &mlspb.HandlePendingCommitRequest{StateId: resp.StateId})
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	r.setState(s.Actor, merged.StateId)
	if err := r.join(s.Members, cr.Welcome, nil, merged.EpochAuthenticator); err != nil {
		return err
	}
	r.last = append([]string{s.Actor}, s.Members...)
	return nil
}

func (r *scriptRun) externalJoin(i int, s *step) error {
	c, err := r.client(s.Actor)
	if err != nil {
		return err
	}
	gi, err := c.GroupInfo(r.ctx, &mlspb.GroupInfoRequest{StateId: r.state[s.Actor], ExternalTree: s.externalTree()})
	if err != nil {
		return fmt.Errorf("group info: %w", err)
	}
	r.out[i]["group_info"], r.out[i]["ratchet_tree"] = gi.GroupInfo, gi.RatchetTree
	req := &mlspb.ExternalJoinRequest{
		GroupInfo: gi.GroupInfo, RatchetTree: gi.RatchetTree, EncryptHandshake: r.encrypt,
		Identity: []byte(s.Joiner), RemovePrior: s.RemovePrior,
	}
	for _, p := range s.PSKs {
		id, err := r.get(p, "psk_id")
		if err != nil {
			return err
		}
		secret, err := r.get(p, "psk_secret")
		if err != nil {
			return err
		}
		req.Psks = append(req.Psks, &mlspb.PreSharedKey{PskId: id, PskSecret: secret})
	}
	jc, err := r.client(s.Joiner)
	if err != nil {
		return err
	}
	resp, err := jc.ExternalJoin(r.ctx, req)
	if err != nil {
		return fmt.Errorf("external join: %w", err)
	}
	r.setState(s.Joiner, resp.StateId)
	r.out[i]["commit"], r.out[i]["epoch_authenticator"] = resp.Commit, resp.EpochAuthenticator
	members := append(slices.Clone(s.Members), s.Actor)
	if err := r.handleCommit(members, nil, resp.Commit, resp.EpochAuthenticator); err != nil {
		return err
	}
	r.last = append(members, s.Joiner)
	return nil
}

func (r *scriptRun) propose(i int, s *step) error {
	c, err := r.client(s.Actor)
	if err != nil {
		return err
	}
	id := r.state[s.Actor]
	var resp *mlspb.ProposalResponse
	switch s.Action {
	case "addProposal":
		kp, err := r.get(s.KeyPackage, "key_package")
		if err != nil {
			return err
		}
		resp, err = c.AddProposal(r.ctx, &mlspb.AddProposalRequest{StateId: id, KeyPackage: kp})
		if err != nil {
			return err
		}
	case "updateProposal":
		resp, err = c.UpdateProposal(r.ctx, &mlspb.UpdateProposalRequest{StateId: id})
	case "removeProposal":
		resp, err = c.RemoveProposal(r.ctx, &mlspb.RemoveProposalRequest{StateId: id, RemovedId: []byte(s.Removed)})
	case "externalPSKProposal":
		psk, err := r.get(s.PskID, "psk_id")
		if err != nil {
			return err
		}
		resp, err = c.ExternalPSKProposal(r.ctx, &mlspb.ExternalPSKProposalRequest{StateId: id, PskId: psk})
		if err != nil {
			return err
		}
	case "resumptionPSKProposal":
		resp, err = c.ResumptionPSKProposal(r.ctx, &mlspb.ResumptionPSKProposalRequest{StateId: id, EpochId: s.EpochID})
	case "groupContextExtensionsProposal":
		resp, err = c.GroupContextExtensionsProposal(r.ctx, &mlspb.GroupContextExtensionsProposalRequest{StateId: id, Extensions: protoExtensions(s.Extensions)})
	}
	if err != nil {
		return err
	}
	r.out[i]["proposal"] = resp.Proposal
	return nil
}

func (r *scriptRun) unprotect(s *step) error {
	ct, err := r.get(s.Ciphertext, "ciphertext")
	if err != nil {
		return err
	}
	ad, _ := r.get(s.Ciphertext, "authenticated_data")
	pt, _ := r.get(s.Ciphertext, "plaintext")
	c, err := r.client(s.Actor)
	if err != nil {
		return err
	}
	resp, err := c.Unprotect(r.ctx, &mlspb.UnprotectRequest{StateId: r.state[s.Actor], Ciphertext: ct})
	if err != nil {
		return err
	}
	if !bytes.Equal(resp.AuthenticatedData, ad) || !bytes.Equal(resp.Plaintext, pt) {
		return fmt.Errorf("unprotect: got %q / %q, want %q / %q", resp.AuthenticatedData, resp.Plaintext, ad, pt)
	}
	return nil
}

// reinit runs a whole re-initialization: proposal (or an external one made
// earlier), Commit, Welcome to the new group and joins.
func (r *scriptRun) reinit(s *step) error {
	notCommitter := map[string]bool{s.Welcomer: true}
	notWelcomer := map[string]bool{s.Committer: true}
	for _, m := range append(slices.Clone(s.Members), s.Proposer) {
		if m != "" {
			notCommitter[m], notWelcomer[m] = true, true
		}
	}
	delete(notCommitter, s.Committer)
	delete(notWelcomer, s.Welcomer)

	var proposal []byte
	if s.Proposer != "" {
		groupID, err := r.groupID(s.ChangeGroupID)
		if err != nil {
			return err
		}
		if s.ChangeCipherSuite {
			if err := r.changeCipherSuite(); err != nil {
				return err
			}
		}
		c, err := r.client(s.Proposer)
		if err != nil {
			return err
		}
		resp, err := c.ReInitProposal(r.ctx, &mlspb.ReInitProposalRequest{
			StateId: r.state[s.Proposer], CipherSuite: r.suite, GroupId: groupID, Extensions: protoExtensions(s.Extensions),
		})
		if err != nil {
			return fmt.Errorf("reinit proposal: %w", err)
		}
		proposal = resp.Proposal
	} else {
		var err error
		if proposal, err = r.get(s.ExternalReinitProposal, "proposal"); err != nil {
			return err
		}
	}

	c, err := r.client(s.Committer)
	if err != nil {
		return err
	}
	cr, err := c.ReInitCommit(r.ctx, &mlspb.CommitRequest{StateId: r.state[s.Committer], ByReference: [][]byte{proposal}})
	if err != nil {
		return fmt.Errorf("reinit commit: %w", err)
	}
	pr, err := c.HandlePendingReInitCommit(r.ctx, &mlspb.HandlePendingCommitRequest{StateId: r.state[s.Committer]})
	if err != nil {
		return fmt.Errorf("merge reinit commit: %w", err)
	}
	reinitID := map[string]uint32{s.Committer: pr.ReinitId}
	keyPackage := map[string][]byte{s.Committer: pr.KeyPackage}
	for _, m := range sortedKeys(notCommitter) {
		mc, err := r.client(m)
		if err != nil {
			return err
		}
		resp, err := mc.HandleReInitCommit(r.ctx, &mlspb.HandleCommitRequest{StateId: r.state[m], Proposal: [][]byte{proposal}, Commit: cr.Commit})
		if err != nil {
			return fmt.Errorf("reinit commit at %s: %w", m, err)
		}
		if err := agree("member "+m, resp.EpochAuthenticator, pr.EpochAuthenticator); err != nil {
			return err
		}
		reinitID[m], keyPackage[m] = resp.ReinitId, resp.KeyPackage
	}

	wc, err := r.client(s.Welcomer)
	if err != nil {
		return err
	}
	wreq := &mlspb.ReInitWelcomeRequest{ReinitId: reinitID[s.Welcomer], ForcePath: s.forcePath(), ExternalTree: s.externalTree()}
	for _, m := range sortedKeys(notWelcomer) {
		wreq.KeyPackage = append(wreq.KeyPackage, keyPackage[m])
	}
	wresp, err := wc.ReInitWelcome(r.ctx, wreq)
	if err != nil {
		return fmt.Errorf("reinit welcome: %w", err)
	}
	r.setState(s.Welcomer, wresp.StateId)
	for _, m := range sortedKeys(notWelcomer) {
		mc, err := r.client(m)
		if err != nil {
			return err
		}
		resp, err := mc.HandleReInitWelcome(r.ctx, &mlspb.HandleReInitWelcomeRequest{ReinitId: reinitID[m], Welcome: wresp.Welcome, RatchetTree: wresp.RatchetTree})
		if err != nil {
			return fmt.Errorf("reinit welcome at %s: %w", m, err)
		}
		if err := agree("member "+m+" of the new group", resp.EpochAuthenticator, wresp.EpochAuthenticator); err != nil {
			return err
		}
		r.setState(m, resp.StateId)
	}
	r.last = append([]string{s.Welcomer}, sortedKeys(notWelcomer)...)
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (r *scriptRun) branch(s *step) error {
	tx := map[string]uint32{}
	req := &mlspb.CreateBranchRequest{
		StateId: r.state[s.Actor], Extensions: protoExtensions(s.Extensions), ForcePath: s.forcePath(), ExternalTree: s.externalTree(),
	}
	id := make([]byte, 16)
	rand.Read(id)
	req.GroupId = []byte(hex.EncodeToString(id))
	for _, m := range s.Members {
		kp, err := r.createKeyPackage(m)
		if err != nil {
			return err
		}
		tx[m] = kp.TransactionId
		req.KeyPackages = append(req.KeyPackages, kp.KeyPackage)
	}
	c, err := r.client(s.Actor)
	if err != nil {
		return err
	}
	resp, err := c.CreateBranch(r.ctx, req)
	if err != nil {
		return fmt.Errorf("branch: %w", err)
	}
	r.setState(s.Actor, resp.StateId)
	for _, m := range s.Members {
		mc, err := r.client(m)
		if err != nil {
			return err
		}
		hr, err := mc.HandleBranch(r.ctx, &mlspb.HandleBranchRequest{StateId: r.state[m], TransactionId: tx[m], Welcome: resp.Welcome, RatchetTree: resp.RatchetTree})
		if err != nil {
			return fmt.Errorf("branch at %s: %w", m, err)
		}
		if err := agree("member "+m+" of the branch", hr.EpochAuthenticator, resp.EpochAuthenticator); err != nil {
			return err
		}
		r.setState(m, hr.StateId)
	}
	r.last = append([]string{s.Actor}, s.Members...)
	return nil
}

func (r *scriptRun) newMemberAddProposal(i int, s *step) error {
	c, err := r.client(s.Actor)
	if err != nil {
		return err
	}
	gi, err := c.GroupInfo(r.ctx, &mlspb.GroupInfoRequest{StateId: r.state[s.Actor]})
	if err != nil {
		return err
	}
	jc, err := r.client(s.Joiner)
	if err != nil {
		return err
	}
	resp, err := jc.NewMemberAddProposal(r.ctx, &mlspb.NewMemberAddProposalRequest{GroupInfo: gi.GroupInfo, Identity: []byte(s.Joiner)})
	if err != nil {
		return err
	}
	r.tx[s.Joiner] = resp.TransactionId
	r.out[i]["proposal"] = resp.Proposal
	return nil
}

func (r *scriptRun) addExternalSigner(i int, s *step) error {
	sc, err := r.client(s.Signer)
	if err != nil {
		return err
	}
	es, err := sc.CreateExternalSigner(r.ctx, &mlspb.CreateExternalSignerRequest{CipherSuite: r.suite, Identity: []byte(s.Signer)})
	if err != nil {
		return err
	}
	r.signer[s.Signer] = es.SignerId
	c, err := r.client(s.Actor)
	if err != nil {
		return err
	}
	resp, err := c.AddExternalSigner(r.ctx, &mlspb.AddExternalSignerRequest{StateId: r.state[s.Actor], ExternalSender: es.ExternalSender})
	if err != nil {
		return err
	}
	r.out[i]["proposal"] = resp.Proposal
	return nil
}

func (r *scriptRun) externalSignerProposal(i int, s *step) error {
	mc, err := r.client(s.Member)
	if err != nil {
		return err
	}
	gi, err := mc.GroupInfo(r.ctx, &mlspb.GroupInfoRequest{StateId: r.state[s.Member], ExternalTree: true})
	if err != nil {
		return err
	}
	d, err := r.description(&s.Description)
	if err != nil {
		return err
	}
	c, err := r.client(s.Actor)
	if err != nil {
		return err
	}
	resp, err := c.ExternalSignerProposal(r.ctx, &mlspb.ExternalSignerProposalRequest{
		SignerId: r.signer[s.Actor], GroupInfo: gi.GroupInfo, RatchetTree: gi.RatchetTree, Description: d,
	})
	if err != nil {
		return err
	}
	r.out[i]["proposal"] = resp.Proposal
	return nil
}
