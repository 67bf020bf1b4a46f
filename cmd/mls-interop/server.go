package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quicproquo/qpq/cmd/mls-interop/mlspb"
	"github.com/quicproquo/qpq/mls"
	"github.com/quicproquo/qpq/mls/cipher"
	"github.com/quicproquo/qpq/mls/codec"
)

// implementationName is what the Name RPC reports.
const implementationName = "quicproquo-go"

// Limits on what one harness process holds, so that a runner that never
// calls Free cannot exhaust memory without noticing.
const (
	maxObjects      = 1 << 16 // group states, transactions, signers, reinits
	maxExportLength = 1 << 16 // Export key_length
)

// server implements the MLSClient service of the IETF interop harness
// (mls_client.proto) on top of package mls. Each RPC names its objects by
// IDs this server hands out; one mutex serializes the RPCs, since the test
// runner drives a script step by step anyway.
type server struct {
	mlspb.UnimplementedMLSClientServer

	mu      sync.Mutex // guards the fields below
	nextID  uint32
	groups  map[uint32]*groupState
	txs     map[uint32]*transaction
	signers map[uint32]*externalSigner
	reinits map[uint32]*reinitState
}

var _ mlspb.MLSClientServer = (*server)(nil)

func newServer() *server {
	return &server{
		groups:  map[uint32]*groupState{},
		txs:     map[uint32]*transaction{},
		signers: map[uint32]*externalSigner{},
		reinits: map[uint32]*reinitState{},
	}
}

// groupState is one member's view of a group.
type groupState struct {
	g *mls.Group
	// wf is the wire format of this member's handshake messages.
	wf mls.WireFormat
	// psks holds the external PSKs stored for this state (the group's
	// Config.PSKs refers to this map).
	psks mls.ExternalPSKs
	// sent maps the proposals this member sent, as returned, to their
	// references: the runner hands them back in Commit and HandleCommit.
	sent map[string][]byte
}

// transaction is a KeyPackage waiting for a Welcome.
type transaction struct {
	kp   *mls.KeyPackageBundle
	psks mls.ExternalPSKs
}

type externalSigner struct {
	signer cipher.Signer
}

// reinitState is a member of a group whose ReInit was committed, with its
// KeyPackage for the new group.
type reinitState struct {
	old *groupState
	kp  *mls.KeyPackageBundle
}

// add stores v under a fresh ID in m. The caller holds s.mu.
func add[T any](s *server, m map[uint32]T, v T) (uint32, error) {
	if len(s.groups)+len(s.txs)+len(s.signers)+len(s.reinits) >= maxObjects {
		return 0, status.Error(codes.ResourceExhausted, "too many objects; call Free")
	}
	s.nextID++
	m[s.nextID] = v
	return s.nextID, nil
}

func lookup[T any](m map[uint32]T, id uint32, what string) (T, error) {
	v, ok := m[id]
	if !ok {
		var zero T
		return zero, status.Errorf(codes.NotFound, "no %s %d", what, id)
	}
	return v, nil
}

// fail turns an error of package mls into a gRPC status; what names the
// step that failed.
func fail(what string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.InvalidArgument
	switch {
	case errors.Is(err, mls.ErrUnsupported):
		code = codes.Unimplemented
	case errors.Is(err, mls.ErrWrongEpoch), errors.Is(err, mls.ErrCommitPending), errors.Is(err, mls.ErrNoPendingCommit),
		errors.Is(err, mls.ErrPendingProposals), errors.Is(err, mls.ErrRemoved):
		code = codes.FailedPrecondition
	}
	return status.Errorf(code, "%s: %v", what, err)
}

func wireFormat(encrypt bool) mls.WireFormat {
	if encrypt {
		return mls.WireFormatPrivateMessage
	}
	return mls.WireFormatPublicMessage
}

func newSigner(suite uint32) (cipher.Suite, cipher.Signer, error) {
	if suite > 0xffff {
		return nil, nil, status.Errorf(codes.InvalidArgument, "cipher suite %d", suite)
	}
	s, err := cipher.Lookup(cipher.ID(suite))
	if err != nil {
		return nil, nil, status.Errorf(codes.Unimplemented, "cipher suite 0x%04x", suite)
	}
	signer, err := s.GenerateSigner()
	if err != nil {
		return nil, nil, fail("signature key", err)
	}
	return s, signer, nil
}

// decodeMessage decodes an MLSMessage of the given wire format.
func decodeMessage(data []byte, wf mls.WireFormat, what string) (*mls.MLSMessage, error) {
	m, err := mls.DecodeMLSMessage(data)
	if err != nil {
		return nil, fail(what, err)
	}
	if m.WireFormat != wf {
		return nil, status.Errorf(codes.InvalidArgument, "%s: wire format %d, want %d", what, m.WireFormat, wf)
	}
	return m, nil
}

// decodeKeyPackage accepts a KeyPackage MLSMessage or a bare KeyPackage.
func decodeKeyPackage(data []byte) (*mls.KeyPackage, error) {
	if m, err := mls.DecodeMLSMessage(data); err == nil && m.KeyPackage != nil {
		return m.KeyPackage, nil
	}
	kp, err := mls.DecodeKeyPackage(data)
	if err != nil {
		return nil, fail("key package", err)
	}
	return kp, nil
}

func decodeTree(data []byte) (mls.RatchetTree, error) {
	if len(data) == 0 {
		return nil, nil
	}
	var t mls.RatchetTree
	if err := codec.Unmarshal(data, &t); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "ratchet tree: %v", err)
	}
	return t, nil
}

// decodeWelcome decodes a Welcome MLSMessage and the ratchet tree that
// may come with it.
func decodeWelcome(welcome, tree []byte) (*mls.Welcome, mls.RatchetTree, error) {
	wm, err := decodeMessage(welcome, mls.WireFormatWelcome, "welcome")
	if err != nil {
		return nil, nil, err
	}
	t, err := decodeTree(tree)
	if err != nil {
		return nil, nil, err
	}
	return wm.Welcome, t, nil
}

func encodeTree(t mls.RatchetTree) []byte { return codec.Marshal(t) }

func messageBytes(m *mls.MLSMessage) []byte { return m.Encode() }

func welcomeBytes(w *mls.Welcome) []byte {
	if w == nil {
		return nil
	}
	return messageBytes(&mls.MLSMessage{Version: mls.MLS10, WireFormat: mls.WireFormatWelcome, Welcome: w})
}

func extensions(in []*mlspb.Extension) (mls.Extensions, error) {
	var out mls.Extensions
	for _, e := range in {
		if e.ExtensionType > 0xffff {
			return nil, status.Errorf(codes.InvalidArgument, "extension type %d", e.ExtensionType)
		}
		data := e.ExtensionData
		if data == nil {
			data = []byte{}
		}
		out = append(out, mls.Extension{Type: mls.ExtensionType(e.ExtensionType), Data: data})
	}
	return out, nil
}

// Name implements mlspb.MLSClientServer.
func (s *server) Name(context.Context, *mlspb.NameRequest) (*mlspb.NameResponse, error) {
	return &mlspb.NameResponse{Name: implementationName}, nil
}

// SupportedCiphersuites implements mlspb.MLSClientServer.
func (s *server) SupportedCiphersuites(context.Context, *mlspb.SupportedCiphersuitesRequest) (*mlspb.SupportedCiphersuitesResponse, error) {
	var out []uint32
	for _, id := range cipher.Registered() {
		out = append(out, uint32(id))
	}
	return &mlspb.SupportedCiphersuitesResponse{Ciphersuites: out}, nil
}

// newGroupState wraps a group. The caller holds s.mu.
func (s *server) newGroupState(g *mls.Group, encrypt bool, psks mls.ExternalPSKs) (uint32, error) {
	return add(s, s.groups, &groupState{g: g, wf: wireFormat(encrypt), psks: psks, sent: map[string][]byte{}})
}

func config(psks mls.ExternalPSKs) mls.Config { return mls.Config{PSKs: psks} }

// CreateGroup implements mlspb.MLSClientServer.
func (s *server) CreateGroup(_ context.Context, req *mlspb.CreateGroupRequest) (*mlspb.CreateGroupResponse, error) {
	suite, signer, err := newSigner(req.CipherSuite)
	if err != nil {
		return nil, err
	}
	psks := mls.ExternalPSKs{}
	g, err := mls.NewGroup(suite.ID(), req.GroupId, signer, mls.BasicCredential(req.Identity), mls.LeafOptions{}, nil, config(psks))
	if err != nil {
		return nil, fail("create group", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.newGroupState(g, req.EncryptHandshake, psks)
	if err != nil {
		return nil, err
	}
	return &mlspb.CreateGroupResponse{StateId: id}, nil
}

// newKeyPackage makes a KeyPackage bundle for identity.
func newKeyPackage(suite uint32, signer cipher.Signer, identity []byte) (*mls.KeyPackageBundle, error) {
	if signer == nil {
		var err error
		if _, signer, err = newSigner(suite); err != nil {
			return nil, err
		}
	}
	kp, err := mls.NewKeyPackage(cipher.ID(suite), signer, mls.BasicCredential(identity), mls.LeafOptions{}, nil)
	if err != nil {
		return nil, fail("key package", err)
	}
	return kp, nil
}

func keyPackageBytes(kp *mls.KeyPackage) []byte {
	return messageBytes(&mls.MLSMessage{Version: mls.MLS10, WireFormat: mls.WireFormatKeyPackage, KeyPackage: kp})
}

// CreateKeyPackage implements mlspb.MLSClientServer.
func (s *server) CreateKeyPackage(_ context.Context, req *mlspb.CreateKeyPackageRequest) (*mlspb.CreateKeyPackageResponse, error) {
	kp, err := newKeyPackage(req.CipherSuite, nil, req.Identity)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := add(s, s.txs, &transaction{kp: kp, psks: mls.ExternalPSKs{}})
	if err != nil {
		return nil, err
	}
	return &mlspb.CreateKeyPackageResponse{
		TransactionId:  id,
		KeyPackage:     keyPackageBytes(kp.KeyPackage),
		InitPriv:       kp.InitPriv,
		EncryptionPriv: kp.EncryptionPriv,
		SignaturePriv:  kp.Signer.Bytes(),
	}, nil
}

// JoinGroup implements mlspb.MLSClientServer.
func (s *server) JoinGroup(_ context.Context, req *mlspb.JoinGroupRequest) (*mlspb.JoinGroupResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := lookup(s.txs, req.TransactionId, "transaction")
	if err != nil {
		return nil, err
	}
	w, tree, err := decodeWelcome(req.Welcome, req.RatchetTree)
	if err != nil {
		return nil, err
	}
	g, err := mls.JoinWelcome(w, tx.kp, tree, config(tx.psks))
	if err != nil {
		return nil, fail("join", err)
	}
	delete(s.txs, req.TransactionId)
	id, err := s.newGroupState(g, req.EncryptHandshake, tx.psks)
	if err != nil {
		return nil, err
	}
	return &mlspb.JoinGroupResponse{StateId: id, EpochAuthenticator: g.EpochAuthenticator()}, nil
}

// ExternalJoin implements mlspb.MLSClientServer. The joiner's Commit is
// merged at once: the runner hands it to the members itself.
func (s *server) ExternalJoin(_ context.Context, req *mlspb.ExternalJoinRequest) (*mlspb.ExternalJoinResponse, error) {
	gim, err := decodeMessage(req.GroupInfo, mls.WireFormatGroupInfo, "group info")
	if err != nil {
		return nil, err
	}
	tree, err := decodeTree(req.RatchetTree)
	if err != nil {
		return nil, err
	}
	_, signer, err := newSigner(uint32(gim.GroupInfo.GroupContext.CipherSuite))
	if err != nil {
		return nil, err
	}
	psks := mls.ExternalPSKs{}
	opts := mls.ExternalJoinOptions{RemovePrior: req.RemovePrior}
	for _, p := range req.Psks {
		psks[string(p.PskId)] = p.PskSecret
		opts.PSKs = append(opts.PSKs, mls.PreSharedKeyID{Type: mls.PSKTypeExternal, PSKID: p.PskId})
	}
	g, pc, err := mls.JoinExternal(gim.GroupInfo, tree, signer, mls.BasicCredential(req.Identity), opts, config(psks))
	if err != nil {
		return nil, fail("external join", err)
	}
	if _, err := g.MergePendingCommit(); err != nil {
		return nil, fail("external join", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.newGroupState(g, req.EncryptHandshake, psks)
	if err != nil {
		return nil, err
	}
	return &mlspb.ExternalJoinResponse{StateId: id, Commit: messageBytes(pc.Message), EpochAuthenticator: g.EpochAuthenticator()}, nil
}

// GroupInfo implements mlspb.MLSClientServer. The GroupInfo always carries
// external_pub; it carries the tree unless external_tree asks for it
// separately.
func (s *server) GroupInfo(_ context.Context, req *mlspb.GroupInfoRequest) (*mlspb.GroupInfoResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := lookup(s.groups, req.StateId, "state")
	if err != nil {
		return nil, err
	}
	gi, err := st.g.GroupInfo(mls.GroupInfoOptions{RatchetTree: !req.ExternalTree, ExternalPub: true})
	if err != nil {
		return nil, fail("group info", err)
	}
	resp := &mlspb.GroupInfoResponse{GroupInfo: messageBytes(&mls.MLSMessage{Version: mls.MLS10, WireFormat: mls.WireFormatGroupInfo, GroupInfo: gi})}
	if req.ExternalTree {
		resp.RatchetTree = encodeTree(st.g.RatchetTree())
	}
	return resp, nil
}

// StateAuth implements mlspb.MLSClientServer.
func (s *server) StateAuth(_ context.Context, req *mlspb.StateAuthRequest) (*mlspb.StateAuthResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := lookup(s.groups, req.StateId, "state")
	if err != nil {
		return nil, err
	}
	return &mlspb.StateAuthResponse{StateAuthSecret: st.g.EpochAuthenticator()}, nil
}

// Export implements mlspb.MLSClientServer.
func (s *server) Export(_ context.Context, req *mlspb.ExportRequest) (*mlspb.ExportResponse, error) {
	if req.KeyLength > maxExportLength {
		return nil, status.Errorf(codes.InvalidArgument, "key length %d", req.KeyLength)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := lookup(s.groups, req.StateId, "state")
	if err != nil {
		return nil, err
	}
	out, err := st.g.Export(req.Label, req.Context, int(req.KeyLength))
	if err != nil {
		return nil, fail("export", err)
	}
	return &mlspb.ExportResponse{ExportedSecret: out}, nil
}

// Protect implements mlspb.MLSClientServer.
func (s *server) Protect(_ context.Context, req *mlspb.ProtectRequest) (*mlspb.ProtectResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := lookup(s.groups, req.StateId, "state")
	if err != nil {
		return nil, err
	}
	m, err := st.g.Encrypt(req.Plaintext, req.AuthenticatedData, 0)
	if err != nil {
		return nil, fail("protect", err)
	}
	return &mlspb.ProtectResponse{Ciphertext: messageBytes(m)}, nil
}

// Unprotect implements mlspb.MLSClientServer.
func (s *server) Unprotect(_ context.Context, req *mlspb.UnprotectRequest) (*mlspb.UnprotectResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := lookup(s.groups, req.StateId, "state")
	if err != nil {
		return nil, err
	}
	m, err := decodeMessage(req.Ciphertext, mls.WireFormatPrivateMessage, "ciphertext")
	if err != nil {
		return nil, err
	}
	r, err := st.g.Process(m)
	if err != nil {
		return nil, fail("unprotect", err)
	}
	if r.ContentType != mls.ContentTypeApplication {
		return nil, status.Errorf(codes.InvalidArgument, "unprotect: content type %d", r.ContentType)
	}
	return &mlspb.UnprotectResponse{AuthenticatedData: r.AuthenticatedData, Plaintext: r.ApplicationData}, nil
}

// StorePSK implements mlspb.MLSClientServer.
func (s *server) StorePSK(_ context.Context, req *mlspb.StorePSKRequest) (*mlspb.StorePSKResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := req.StateOrTransactionId
	var psks mls.ExternalPSKs
	if st, ok := s.groups[id]; ok {
		psks = st.psks
	} else if tx, ok := s.txs[id]; ok {
		psks = tx.psks
	} else {
		return nil, status.Errorf(codes.NotFound, "no state or transaction %d", id)
	}
	psks[string(req.PskId)] = bytes.Clone(req.PskSecret)
	return &mlspb.StorePSKResponse{}, nil
}

// propose sends p from the member of state id and remembers it.
func (s *server) propose(id uint32, p func(*groupState) (mls.Proposal, error)) (*mlspb.ProposalResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := lookup(s.groups, id, "state")
	if err != nil {
		return nil, err
	}
	var m *mls.MLSMessage
	var ref []byte
	if p == nil {
		m, ref, err = st.g.ProposeUpdate(st.wf)
	} else {
		var prop mls.Proposal
		if prop, err = p(st); err != nil {
			return nil, err
		}
		m, ref, err = st.g.Propose(prop, st.wf)
	}
	if err != nil {
		return nil, fail("propose", err)
	}
	wire := messageBytes(m)
	st.sent[string(wire)] = ref
	return &mlspb.ProposalResponse{Proposal: wire}, nil
}

// AddProposal implements mlspb.MLSClientServer.
func (s *server) AddProposal(_ context.Context, req *mlspb.AddProposalRequest) (*mlspb.ProposalResponse, error) {
	return s.propose(req.StateId, func(*groupState) (mls.Proposal, error) {
		kp, err := decodeKeyPackage(req.KeyPackage)
		if err != nil {
			return nil, err
		}
		return &mls.AddProposal{KeyPackage: *kp}, nil
	})
}

// UpdateProposal implements mlspb.MLSClientServer.
func (s *server) UpdateProposal(_ context.Context, req *mlspb.UpdateProposalRequest) (*mlspb.ProposalResponse, error) {
	return s.propose(req.StateId, nil)
}

// leafOf finds the member whose basic identity is identity.
func leafOf(members []mls.Member, identity []byte) (mls.LeafIndex, error) {
	for _, m := range members {
		if bytes.Equal(m.Identity(), identity) {
			return m.Leaf, nil
		}
	}
	return 0, status.Errorf(codes.InvalidArgument, "no member with identity %q", identity)
}

// RemoveProposal implements mlspb.MLSClientServer.
func (s *server) RemoveProposal(_ context.Context, req *mlspb.RemoveProposalRequest) (*mlspb.ProposalResponse, error) {
	return s.propose(req.StateId, func(st *groupState) (mls.Proposal, error) {
		l, err := leafOf(st.g.Members(), req.RemovedId)
		if err != nil {
			return nil, err
		}
		return &mls.RemoveProposal{Removed: l}, nil
	})
}

func pskNonce(suite cipher.ID) ([]byte, error) {
	s, err := cipher.Lookup(suite)
	if err != nil {
		return nil, status.Errorf(codes.Unimplemented, "cipher suite %v", suite)
	}
	n := make([]byte, s.Nh())
	if _, err := rand.Read(n); err != nil {
		return nil, status.Errorf(codes.Internal, "randomness: %v", err)
	}
	return n, nil
}

func externalPSK(suite cipher.ID, id []byte) (mls.Proposal, error) {
	nonce, err := pskNonce(suite)
	if err != nil {
		return nil, err
	}
	return &mls.PreSharedKeyProposal{PSK: mls.PreSharedKeyID{Type: mls.PSKTypeExternal, PSKID: bytes.Clone(id), PSKNonce: nonce}}, nil
}

func resumptionPSK(suite cipher.ID, groupID []byte, epoch uint64) (mls.Proposal, error) {
	nonce, err := pskNonce(suite)
	if err != nil {
		return nil, err
	}
	return &mls.PreSharedKeyProposal{PSK: mls.PreSharedKeyID{
		Type: mls.PSKTypeResumption, Usage: mls.ResumptionPSKUsageApplication, PSKGroupID: groupID, PSKEpoch: epoch, PSKNonce: nonce,
	}}, nil
}

// ExternalPSKProposal implements mlspb.MLSClientServer.
func (s *server) ExternalPSKProposal(_ context.Context, req *mlspb.ExternalPSKProposalRequest) (*mlspb.ProposalResponse, error) {
	return s.propose(req.StateId, func(st *groupState) (mls.Proposal, error) {
		return externalPSK(st.g.CipherSuite(), req.PskId)
	})
}

// ResumptionPSKProposal implements mlspb.MLSClientServer.
func (s *server) ResumptionPSKProposal(_ context.Context, req *mlspb.ResumptionPSKProposalRequest) (*mlspb.ProposalResponse, error) {
	return s.propose(req.StateId, func(st *groupState) (mls.Proposal, error) {
		return resumptionPSK(st.g.CipherSuite(), st.g.GroupID(), req.EpochId)
	})
}

// GroupContextExtensionsProposal implements mlspb.MLSClientServer.
func (s *server) GroupContextExtensionsProposal(_ context.Context, req *mlspb.GroupContextExtensionsProposalRequest) (*mlspb.ProposalResponse, error) {
	return s.propose(req.StateId, func(*groupState) (mls.Proposal, error) {
		ext, err := extensions(req.Extensions)
		if err != nil {
			return nil, err
		}
		return &mls.GroupContextExtensionsProposal{Extensions: ext}, nil
	})
}

// ReInitProposal implements mlspb.MLSClientServer.
func (s *server) ReInitProposal(_ context.Context, req *mlspb.ReInitProposalRequest) (*mlspb.ProposalResponse, error) {
	return s.propose(req.StateId, func(*groupState) (mls.Proposal, error) {
		return reinitProposal(req.GroupId, req.CipherSuite, req.Extensions)
	})
}

func reinitProposal(groupID []byte, suite uint32, ext []*mlspb.Extension) (mls.Proposal, error) {
	e, err := extensions(ext)
	if err != nil {
		return nil, err
	}
	if suite > 0xffff {
		return nil, status.Errorf(codes.InvalidArgument, "cipher suite %d", suite)
	}
	return &mls.ReInitProposal{GroupID: bytes.Clone(groupID), Version: mls.MLS10, CipherSuite: cipher.ID(suite), Extensions: e}, nil
}

// describedProposal builds the proposal a ProposalDescription names, in
// a group with the given suite, ID and members.
func describedProposal(d *mlspb.ProposalDescription, suite cipher.ID, groupID []byte, members []mls.Member) (mls.Proposal, error) {
	switch string(d.ProposalType) {
	case "add":
		kp, err := decodeKeyPackage(d.KeyPackage)
		if err != nil {
			return nil, err
		}
		return &mls.AddProposal{KeyPackage: *kp}, nil
	case "remove":
		l, err := leafOf(members, d.RemovedId)
		if err != nil {
			return nil, err
		}
		return &mls.RemoveProposal{Removed: l}, nil
	case "externalPSK":
		return externalPSK(suite, d.PskId)
	case "resumptionPSK":
		return resumptionPSK(suite, groupID, d.EpochId)
	case "groupContextExtensions":
		ext, err := extensions(d.Extensions)
		if err != nil {
			return nil, err
		}
		return &mls.GroupContextExtensionsProposal{Extensions: ext}, nil
	case "reinit":
		return reinitProposal(d.GroupId, d.CipherSuite, d.Extensions)
	}
	return nil, status.Errorf(codes.InvalidArgument, "proposal type %q", d.ProposalType)
}

// receiveProposals processes the proposals a runner hands a member before
// a Commit and returns their references; the member's own come from what
// it remembers.
func receiveProposals(st *groupState, proposals [][]byte) ([][]byte, error) {
	refs := make([][]byte, 0, len(proposals))
	for i, raw := range proposals {
		if ref, ok := st.sent[string(raw)]; ok {
			refs = append(refs, ref)
			continue
		}
		m, err := mls.DecodeMLSMessage(raw)
		if err != nil {
			return nil, fail(fmt.Sprintf("proposal %d", i), err)
		}
		r, err := st.g.Process(m)
		if err != nil {
			return nil, fail(fmt.Sprintf("proposal %d", i), err)
		}
		if r.Proposal == nil {
			return nil, status.Errorf(codes.InvalidArgument, "proposal %d: content type %d", i, r.ContentType)
		}
		refs = append(refs, r.ProposalRef)
	}
	return refs, nil
}

// Commit implements mlspb.MLSClientServer: exactly the given proposals, by
// reference and by value.
func (s *server) Commit(_ context.Context, req *mlspb.CommitRequest) (*mlspb.CommitResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := lookup(s.groups, req.StateId, "state")
	if err != nil {
		return nil, err
	}
	refs, err := receiveProposals(st, req.ByReference)
	if err != nil {
		return nil, err
	}
	opts := mls.CommitOptions{
		ByReference: refs, ForcePath: req.ForcePath, WireFormat: st.wf, RatchetTreeInWelcome: !req.ExternalTree,
	}
	members := st.g.Members()
	for _, d := range req.ByValue {
		p, err := describedProposal(d, st.g.CipherSuite(), st.g.GroupID(), members)
		if err != nil {
			return nil, err
		}
		opts.Proposals = append(opts.Proposals, p)
	}
	pc, err := st.g.Commit(opts)
	if err != nil {
		return nil, fail("commit", err)
	}
	resp := &mlspb.CommitResponse{Commit: messageBytes(pc.Message), Welcome: welcomeBytes(pc.Welcome)}
	if req.ExternalTree {
		resp.RatchetTree = encodeTree(pc.RatchetTree())
	}
	return resp, nil
}

// handleCommit processes proposals and then the Commit at a member.
func (s *server) handleCommit(req *mlspb.HandleCommitRequest) (*groupState, *mls.CommitResult, error) {
	st, err := lookup(s.groups, req.StateId, "state")
	if err != nil {
		return nil, nil, err
	}
	if _, err := receiveProposals(st, req.Proposal); err != nil {
		return nil, nil, err
	}
	m, err := mls.DecodeMLSMessage(req.Commit)
	if err != nil {
		return nil, nil, fail("commit", err)
	}
	r, err := st.g.Process(m)
	if err != nil {
		return nil, nil, fail("commit", err)
	}
	if r.Commit == nil {
		return nil, nil, status.Errorf(codes.InvalidArgument, "commit: content type %d", r.ContentType)
	}
	st.sent = map[string][]byte{}
	return st, r.Commit, nil
}

// HandleCommit implements mlspb.MLSClientServer.
func (s *server) HandleCommit(_ context.Context, req *mlspb.HandleCommitRequest) (*mlspb.HandleCommitResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, _, err := s.handleCommit(req)
	if err != nil {
		return nil, err
	}
	return &mlspb.HandleCommitResponse{StateId: req.StateId, EpochAuthenticator: st.g.EpochAuthenticator()}, nil
}

// HandlePendingCommit implements mlspb.MLSClientServer.
func (s *server) HandlePendingCommit(_ context.Context, req *mlspb.HandlePendingCommitRequest) (*mlspb.HandleCommitResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := lookup(s.groups, req.StateId, "state")
	if err != nil {
		return nil, err
	}
	if _, err := st.g.MergePendingCommit(); err != nil {
		return nil, fail("merge", err)
	}
	st.sent = map[string][]byte{}
	return &mlspb.HandleCommitResponse{StateId: req.StateId, EpochAuthenticator: st.g.EpochAuthenticator()}, nil
}

// ReInitCommit implements mlspb.MLSClientServer.
func (s *server) ReInitCommit(ctx context.Context, req *mlspb.CommitRequest) (*mlspb.CommitResponse, error) {
	return s.Commit(ctx, req)
}

// reinitialized records a member whose group applied a ReInit, with a new
// KeyPackage of its identity for the new group. The caller holds s.mu.
func (s *server) reinitialized(st *groupState) (*mlspb.HandleReInitCommitResponse, error) {
	ri := st.g.ReInit()
	if ri == nil {
		return nil, status.Error(codes.FailedPrecondition, "the commit applied no ReInit")
	}
	me, _ := st.g.Member(st.g.OwnLeaf())
	kp, err := newKeyPackage(uint32(ri.CipherSuite), nil, me.Identity())
	if err != nil {
		return nil, err
	}
	id, err := add(s, s.reinits, &reinitState{old: st, kp: kp})
	if err != nil {
		return nil, err
	}
	return &mlspb.HandleReInitCommitResponse{ReinitId: id, KeyPackage: keyPackageBytes(kp.KeyPackage), EpochAuthenticator: st.g.EpochAuthenticator()}, nil
}

// HandlePendingReInitCommit implements mlspb.MLSClientServer.
func (s *server) HandlePendingReInitCommit(_ context.Context, req *mlspb.HandlePendingCommitRequest) (*mlspb.HandleReInitCommitResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := lookup(s.groups, req.StateId, "state")
	if err != nil {
		return nil, err
	}
	if _, err := st.g.MergePendingCommit(); err != nil {
		return nil, fail("merge", err)
	}
	return s.reinitialized(st)
}

// HandleReInitCommit implements mlspb.MLSClientServer.
func (s *server) HandleReInitCommit(_ context.Context, req *mlspb.HandleCommitRequest) (*mlspb.HandleReInitCommitResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, _, err := s.handleCommit(req)
	if err != nil {
		return nil, err
	}
	return s.reinitialized(st)
}

func keyPackages(in [][]byte) ([]*mls.KeyPackage, error) {
	out := make([]*mls.KeyPackage, 0, len(in))
	for _, raw := range in {
		kp, err := decodeKeyPackage(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, kp)
	}
	return out, nil
}

// successorResponse registers a new group made by Reinitialize or Branch.
// The caller holds s.mu.
func (s *server) successorResponse(g *mls.Group, w *mls.Welcome, wf mls.WireFormat, psks mls.ExternalPSKs, externalTree bool) (*mlspb.CreateSubgroupResponse, error) {
	id, err := s.newGroupState(g, wf == mls.WireFormatPrivateMessage, psks)
	if err != nil {
		return nil, err
	}
	resp := &mlspb.CreateSubgroupResponse{StateId: id, Welcome: welcomeBytes(w), EpochAuthenticator: g.EpochAuthenticator()}
	if externalTree {
		resp.RatchetTree = encodeTree(g.RatchetTree())
	}
	return resp, nil
}

// ReInitWelcome implements mlspb.MLSClientServer.
func (s *server) ReInitWelcome(_ context.Context, req *mlspb.ReInitWelcomeRequest) (*mlspb.CreateSubgroupResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ri, err := lookup(s.reinits, req.ReinitId, "reinit")
	if err != nil {
		return nil, err
	}
	kps, err := keyPackages(req.KeyPackage)
	if err != nil {
		return nil, err
	}
	g, w, err := ri.old.g.Reinitialize(kps, mls.SuccessorOptions{
		Signer: ri.kp.Signer, ForcePath: req.ForcePath, RatchetTreeInWelcome: !req.ExternalTree,
	})
	if err != nil {
		return nil, fail("reinitialize", err)
	}
	delete(s.reinits, req.ReinitId)
	return s.successorResponse(g, w, ri.old.wf, ri.old.psks, req.ExternalTree)
}

// HandleReInitWelcome implements mlspb.MLSClientServer.
func (s *server) HandleReInitWelcome(_ context.Context, req *mlspb.HandleReInitWelcomeRequest) (*mlspb.JoinGroupResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ri, err := lookup(s.reinits, req.ReinitId, "reinit")
	if err != nil {
		return nil, err
	}
	w, tree, err := decodeWelcome(req.Welcome, req.RatchetTree)
	if err != nil {
		return nil, err
	}
	g, err := ri.old.g.JoinSuccessor(w, ri.kp, tree, config(ri.old.psks))
	if err != nil {
		return nil, fail("join re-initialized group", err)
	}
	delete(s.reinits, req.ReinitId)
	id, err := s.newGroupState(g, ri.old.wf == mls.WireFormatPrivateMessage, ri.old.psks)
	if err != nil {
		return nil, err
	}
	return &mlspb.JoinGroupResponse{StateId: id, EpochAuthenticator: g.EpochAuthenticator()}, nil
}

// CreateBranch implements mlspb.MLSClientServer.
func (s *server) CreateBranch(_ context.Context, req *mlspb.CreateBranchRequest) (*mlspb.CreateSubgroupResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := lookup(s.groups, req.StateId, "state")
	if err != nil {
		return nil, err
	}
	ext, err := extensions(req.Extensions)
	if err != nil {
		return nil, err
	}
	kps, err := keyPackages(req.KeyPackages)
	if err != nil {
		return nil, err
	}
	g, w, err := st.g.Branch(req.GroupId, ext, kps, mls.SuccessorOptions{ForcePath: req.ForcePath, RatchetTreeInWelcome: !req.ExternalTree})
	if err != nil {
		return nil, fail("branch", err)
	}
	return s.successorResponse(g, w, st.wf, st.psks, req.ExternalTree)
}

// HandleBranch implements mlspb.MLSClientServer.
func (s *server) HandleBranch(_ context.Context, req *mlspb.HandleBranchRequest) (*mlspb.HandleBranchResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := lookup(s.groups, req.StateId, "state")
	if err != nil {
		return nil, err
	}
	tx, err := lookup(s.txs, req.TransactionId, "transaction")
	if err != nil {
		return nil, err
	}
	w, tree, err := decodeWelcome(req.Welcome, req.RatchetTree)
	if err != nil {
		return nil, err
	}
	g, err := st.g.JoinSuccessor(w, tx.kp, tree, config(st.psks))
	if err != nil {
		return nil, fail("join branch", err)
	}
	delete(s.txs, req.TransactionId)
	id, err := s.newGroupState(g, st.wf == mls.WireFormatPrivateMessage, st.psks)
	if err != nil {
		return nil, err
	}
	return &mlspb.HandleBranchResponse{StateId: id, EpochAuthenticator: g.EpochAuthenticator()}, nil
}

// NewMemberAddProposal implements mlspb.MLSClientServer.
func (s *server) NewMemberAddProposal(_ context.Context, req *mlspb.NewMemberAddProposalRequest) (*mlspb.NewMemberAddProposalResponse, error) {
	gim, err := decodeMessage(req.GroupInfo, mls.WireFormatGroupInfo, "group info")
	if err != nil {
		return nil, err
	}
	kp, err := newKeyPackage(uint32(gim.GroupInfo.GroupContext.CipherSuite), nil, req.Identity)
	if err != nil {
		return nil, err
	}
	m, err := mls.JoinProposal(gim.GroupInfo, kp)
	if err != nil {
		return nil, fail("join proposal", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := add(s, s.txs, &transaction{kp: kp, psks: mls.ExternalPSKs{}})
	if err != nil {
		return nil, err
	}
	return &mlspb.NewMemberAddProposalResponse{
		TransactionId: id, Proposal: messageBytes(m),
		InitPriv: kp.InitPriv, EncryptionPriv: kp.EncryptionPriv, SignaturePriv: kp.Signer.Bytes(),
	}, nil
}

// CreateExternalSigner implements mlspb.MLSClientServer.
func (s *server) CreateExternalSigner(_ context.Context, req *mlspb.CreateExternalSignerRequest) (*mlspb.CreateExternalSignerResponse, error) {
	_, signer, err := newSigner(req.CipherSuite)
	if err != nil {
		return nil, err
	}
	es := mls.ExternalSender{SignatureKey: signer.Public(), Credential: mls.BasicCredential(req.Identity)}
	var b codec.Builder
	b.AddOpaque(es.SignatureKey)
	es.Credential.MarshalTLS(&b)
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := add(s, s.signers, &externalSigner{signer: signer})
	if err != nil {
		return nil, err
	}
	return &mlspb.CreateExternalSignerResponse{SignerId: id, ExternalSender: b.Bytes()}, nil
}

// AddExternalSigner implements mlspb.MLSClientServer: a
// GroupContextExtensions proposal that appends the sender to the group's
// external_senders.
func (s *server) AddExternalSigner(_ context.Context, req *mlspb.AddExternalSignerRequest) (*mlspb.ProposalResponse, error) {
	var sender mls.ExternalSender
	r := codec.NewReader(req.ExternalSender)
	sender.SignatureKey = r.Opaque(mls.MaxKeySize)
	sender.Credential.UnmarshalTLS(r)
	if err := r.Finish(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "external sender: %v", err)
	}
	return s.propose(req.StateId, func(st *groupState) (mls.Proposal, error) {
		var ext mls.Extensions
		var senders mls.ExternalSenders
		for _, e := range st.g.Extensions() {
			if e.Type != mls.ExtensionTypeExternalSenders {
				ext = append(ext, e)
				continue
			}
			if err := codec.Unmarshal(e.Data, &senders); err != nil {
				return nil, status.Errorf(codes.FailedPrecondition, "external_senders: %v", err)
			}
		}
		senders = append(senders, sender)
		ext = append(ext, mls.Extension{Type: mls.ExtensionTypeExternalSenders, Data: codec.Marshal(senders)})
		return &mls.GroupContextExtensionsProposal{Extensions: ext}, nil
	})
}

// ExternalSignerProposal implements mlspb.MLSClientServer. The signer's
// index is looked up in the GroupInfo's external_senders by its key.
func (s *server) ExternalSignerProposal(_ context.Context, req *mlspb.ExternalSignerProposalRequest) (*mlspb.ProposalResponse, error) {
	s.mu.Lock()
	es, err := lookup(s.signers, req.SignerId, "signer")
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	gim, err := decodeMessage(req.GroupInfo, mls.WireFormatGroupInfo, "group info")
	if err != nil {
		return nil, err
	}
	gc := &gim.GroupInfo.GroupContext
	data, ok := gc.Extensions.Find(mls.ExtensionTypeExternalSenders)
	if !ok {
		return nil, status.Error(codes.FailedPrecondition, "the group has no external senders")
	}
	var senders mls.ExternalSenders
	if err := codec.Unmarshal(data, &senders); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "external_senders: %v", err)
	}
	index := -1
	for i, x := range senders {
		if bytes.Equal(x.SignatureKey, es.signer.Public()) {
			index = i
		}
	}
	if index < 0 {
		return nil, status.Error(codes.FailedPrecondition, "the signer is not an external sender of the group")
	}
	tree, err := decodeTree(req.RatchetTree)
	if err != nil {
		return nil, err
	}
	var members []mls.Member
	for i, n := range tree {
		if n != nil && n.Leaf != nil {
			members = append(members, mls.Member{Leaf: mls.LeafIndex(i / 2), Credential: n.Leaf.Credential, SignatureKey: n.Leaf.SignatureKey})
		}
	}
	if req.Description == nil {
		return nil, status.Error(codes.InvalidArgument, "no proposal description")
	}
	p, err := describedProposal(req.Description, gc.CipherSuite, gc.GroupID, members)
	if err != nil {
		return nil, err
	}
	m, err := mls.ExternalProposal(gim.GroupInfo, es.signer, uint32(index), p)
	if err != nil {
		return nil, fail("external proposal", err)
	}
	return &mlspb.ProposalResponse{Proposal: messageBytes(m)}, nil
}

// Free implements mlspb.MLSClientServer.
func (s *server) Free(_ context.Context, req *mlspb.FreeRequest) (*mlspb.FreeResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.groups, req.StateId)
	return &mlspb.FreeResponse{}, nil
}
