package peersvc

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"unicode/utf8"

	"capnproto.org/go/capnp/v3"
	"github.com/quicproquo/qpq/internal/chanid"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
)

// Limits on what peers may send and store. Sizes are in bytes.
const (
	// HybridKeySize is the size of an X-Wing public key.
	HybridKeySize = 1216
	// MaxKeyPackageSize bounds one stored key package.
	MaxKeyPackageSize = 64 << 10
	// MaxKeyPackages bounds how many key packages a node keeps on offer.
	MaxKeyPackages = 1000
	// MaxUsernameSize bounds the username in resolveUser.
	MaxUsernameSize = 256

	DefaultMaxPayload       = 1 << 20
	DefaultMaxInboxMessages = 10_000
	DefaultMaxInboxBytes    = 256 << 20
	DefaultMaxBatch         = 64
)

// Limits bounds what peers can make this node store. The zero value of a
// field means its Default.
type Limits struct {
	MaxPayload       int   // one enqueued payload
	MaxInboxMessages int   // deliveries held until Ack
	MaxInboxBytes    int64 // stored bytes of those deliveries
	MaxBatch         int   // entries in batchEnqueue and fetchHybridKeys
}

func (l Limits) withDefaults() Limits {
	if l.MaxPayload <= 0 {
		l.MaxPayload = DefaultMaxPayload
	}
	if l.MaxInboxMessages <= 0 {
		l.MaxInboxMessages = DefaultMaxInboxMessages
	}
	if l.MaxInboxBytes <= 0 {
		l.MaxInboxBytes = DefaultMaxInboxBytes
	}
	if l.MaxBatch <= 0 {
		l.MaxBatch = DefaultMaxBatch
	}
	return l
}

// Config configures a Service.
type Config struct {
	// Identity is this node's Ed25519 identity key. Required.
	Identity ed25519.PublicKey
	// Username is this node's user's name, answered by resolveUser and
	// resolveIdentity; empty if the node has none.
	Username string
	Limits   Limits
	// Logger receives internal errors and protocol violations; nil
	// discards.
	Logger *slog.Logger
}

// Service is the NodeService a node serves for itself to peers over the
// P2P link. It is safe for concurrent use; Client may be called for any
// number of callers.
type Service struct {
	self     ed25519.PublicKey
	username string
	lim      Limits
	store    *Store
	log      *slog.Logger

	mu      sync.Mutex               // guards opening; held while deciding a channel's roles
	opening map[string]chan struct{} // peer key → closed when our createChannel to it returns
}

// New returns the service of the node with cfg.Identity, backed by store.
func New(store *Store, cfg Config) (*Service, error) {
	if len(cfg.Identity) != ed25519.PublicKeySize {
		return nil, errors.New("peersvc: Config.Identity must be a 32-byte Ed25519 public key")
	}
	if len(cfg.Username) > MaxUsernameSize || !utf8.ValidString(cfg.Username) {
		return nil, errors.New("peersvc: Config.Username is not valid UTF-8 of at most 256 bytes")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Service{
		self:     bytes.Clone(cfg.Identity),
		username: cfg.Username,
		lim:      cfg.Limits.withDefaults(),
		store:    store,
		log:      log.With("component", "peersvc"),
		opening:  make(map[string]chan struct{}),
	}, nil
}

// Client returns the NodeService capability for one authenticated caller,
// to be offered as the bootstrap capability of an RPC connection whose
// remote end is caller (the P2P link has authenticated it).
func (s *Service) Client(caller ed25519.PublicKey) capnp.Client {
	return capnp.Client(schema.NodeService_ServerToClient(&server{svc: s, caller: bytes.Clone(caller)}))
}

// server answers the calls of one caller.
type server struct {
	svc    *Service
	caller ed25519.PublicKey
}

var _ schema.NodeService_Server = (*server)(nil)

func short(key []byte) string {
	if len(key) > 8 {
		key = key[:8]
	}
	return hex.EncodeToString(key)
}

// internal logs err and returns the opaque error a peer sees: a full
// disk is resource-exhausted (the peer may try again later, or leave the
// message at the home server), anything else internal.
func (s *server) internal(what string, err error) error {
	s.svc.log.Error("peer call failed", "op", what, "caller", short(s.caller), "err", err)
	if errcode.Of(errcode.Storage(err)) == errcode.ResourceExhausted {
		return errcode.Errorf(errcode.ResourceExhausted, "%s: this node's storage is full; try again later", what)
	}
	return errcode.Errorf(errcode.Internal, "%s failed on this node", what)
}

func invalid(field string, err error) error {
	return errcode.Errorf(errcode.InvalidArgument, "%s: %v", field, err)
}

// identityArg checks that key is a 32-byte identity key.
func identityArg(field string, key []byte) error {
	if len(key) != ed25519.PublicKeySize {
		return errcode.Errorf(errcode.InvalidArgument, "%s is %d bytes, want %d", field, len(key), ed25519.PublicKeySize)
	}
	return nil
}

// selfArg checks that key names this node; code is what the caller gets
// otherwise.
func (s *server) selfArg(field string, key []byte, code errcode.Code) error {
	if err := identityArg(field, key); err != nil {
		return err
	}
	if !bytes.Equal(key, s.svc.self) {
		return errcode.Errorf(code, "%s is not this node: over the P2P link a node answers only for itself", field)
	}
	return nil
}

func notOffered(method string) error {
	return errcode.Errorf(errcode.FailedPrecondition, "%s is not offered over the P2P link; ask a home server", method)
}

func (s *server) Health(_ context.Context, call schema.NodeService_health) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetStatus("ok")
}

func (s *server) FetchKeyPackage(_ context.Context, call schema.NodeService_fetchKeyPackage) error {
	key, err := call.Args().IdentityKey()
	if err != nil {
		return invalid("identityKey", err)
	}
	if err := s.selfArg("identityKey", key, errcode.NotFound); err != nil {
		return err
	}
	kp, err := s.svc.store.popKeyPackage()
	if err != nil {
		return s.internal("fetchKeyPackage", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetPackage(kp) // empty when none is left, as the schema says
}

func (s *server) FetchHybridKey(_ context.Context, call schema.NodeService_fetchHybridKey) error {
	key, err := call.Args().IdentityKey()
	if err != nil {
		return invalid("identityKey", err)
	}
	if err := s.selfArg("identityKey", key, errcode.NotFound); err != nil {
		return err
	}
	hk, err := s.svc.store.HybridKey()
	if err != nil {
		return s.internal("fetchHybridKey", err)
	}
	if hk == nil {
		return errcode.New(errcode.NotFound, "this node has no hybrid key yet")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetHybridPublicKey(hk)
}

// FetchHybridKeys answers this node's key for entries naming it and empty
// Data for every other entry, like a directory that does not know them.
func (s *server) FetchHybridKeys(_ context.Context, call schema.NodeService_fetchHybridKeys) error {
	keys, err := call.Args().IdentityKeys()
	if err != nil {
		return invalid("identityKeys", err)
	}
	if keys.Len() > s.svc.lim.MaxBatch {
		return errcode.Errorf(errcode.ResourceExhausted, "%d identityKeys: at most %d per call", keys.Len(), s.svc.lim.MaxBatch)
	}
	hk, err := s.svc.store.HybridKey()
	if err != nil {
		return s.internal("fetchHybridKeys", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	out, err := res.NewKeys(int32(keys.Len()))
	if err != nil {
		return err
	}
	for i := range keys.Len() {
		k, err := keys.At(i)
		if err != nil {
			return invalid("identityKeys", err)
		}
		if err := identityArg(fmt.Sprintf("identityKeys[%d]", i), k); err != nil {
			return err
		}
		if bytes.Equal(k, s.svc.self) {
			if err := out.Set(i, hk); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *server) Enqueue(_ context.Context, call schema.NodeService_enqueue) error {
	a := call.Args()
	rcpt, err := a.RecipientKey()
	if err != nil {
		return invalid("recipientKey", err)
	}
	if err := s.selfArg("recipientKey", rcpt, errcode.PermissionDenied); err != nil {
		return err
	}
	seqs, err := s.enqueue(a.Version(), 1, a.ChannelId, a.Payload)
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetSeq(seqs[0])
	return nil
}

func (s *server) BatchEnqueue(_ context.Context, call schema.NodeService_batchEnqueue) error {
	a := call.Args()
	rcpts, err := a.RecipientKeys()
	if err != nil {
		return invalid("recipientKeys", err)
	}
	n := rcpts.Len()
	if n == 0 {
		return errcode.New(errcode.InvalidArgument, "recipientKeys is empty")
	}
	if n > s.svc.lim.MaxBatch {
		return errcode.Errorf(errcode.ResourceExhausted, "%d recipientKeys: at most %d per call", n, s.svc.lim.MaxBatch)
	}
	for i := range n {
		k, err := rcpts.At(i)
		if err != nil {
			return invalid("recipientKeys", err)
		}
		if err := s.selfArg(fmt.Sprintf("recipientKeys[%d]", i), k, errcode.PermissionDenied); err != nil {
			return err
		}
	}
	seqs, err := s.enqueue(a.Version(), n, a.ChannelId, a.Payload)
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	out, err := res.NewSeqs(int32(n))
	if err != nil {
		return err
	}
	for i, seq := range seqs {
		out.Set(i, seq)
	}
	return nil
}

// enqueue validates the common fields of enqueue and batchEnqueue and
// stores n deliveries from the caller.
func (s *server) enqueue(version uint16, n int, channelID, payload func() ([]byte, error)) ([]uint64, error) {
	if version != 1 {
		return nil, errcode.Errorf(errcode.InvalidArgument, "version %d: only 1 is supported", version)
	}
	ch, err := channelID()
	if err != nil {
		return nil, invalid("channelId", err)
	}
	// A label the recipient checks against the authenticated sender;
	// 1:1 channel ids and group ids are both 16-byte UUIDs.
	if len(ch) != 0 && len(ch) != chanid.Size {
		return nil, errcode.Errorf(errcode.InvalidArgument, "channelId is %d bytes, want 0 or %d", len(ch), chanid.Size)
	}
	p, err := payload()
	if err != nil {
		return nil, invalid("payload", err)
	}
	if len(p) == 0 {
		return nil, errcode.New(errcode.InvalidArgument, "payload is empty")
	}
	if len(p) > s.svc.lim.MaxPayload {
		return nil, errcode.Errorf(errcode.ResourceExhausted, "payload of %d bytes: at most %d", len(p), s.svc.lim.MaxPayload)
	}
	seqs, err := s.svc.store.enqueue(s.caller, ch, p, n, s.svc.lim)
	if errors.Is(err, errInboxFull) {
		return nil, errcode.New(errcode.ResourceExhausted, "this node's inbox is full; try again later or use its home server")
	}
	if err != nil {
		return nil, s.internal("enqueue", err)
	}
	return seqs, nil
}

func (s *server) CreateChannel(_ context.Context, call schema.NodeService_createChannel) error {
	peerKey, err := call.Args().PeerKey()
	if err != nil {
		return invalid("peerKey", err)
	}
	if err := s.selfArg("peerKey", peerKey, errcode.PermissionDenied); err != nil {
		return err
	}
	ch, err := s.svc.answerCreateChannel(s.caller)
	if err != nil {
		return s.internal("createChannel", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetWasNew(!ch.SelfInitiates)
	return res.SetChannelId(ch.ID[:])
}

func (s *server) ResolveUser(_ context.Context, call schema.NodeService_resolveUser) error {
	name, err := call.Args().Username()
	if err != nil {
		return invalid("username", err)
	}
	if len(name) > MaxUsernameSize {
		return errcode.Errorf(errcode.InvalidArgument, "username of %d bytes: at most %d", len(name), MaxUsernameSize)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if s.svc.username != "" && name == s.svc.username {
		return res.SetIdentityKey(s.svc.self)
	}
	return nil // empty: not a name this node answers for
}

func (s *server) ResolveIdentity(_ context.Context, call schema.NodeService_resolveIdentity) error {
	key, err := call.Args().IdentityKey()
	if err != nil {
		return invalid("identityKey", err)
	}
	if err := identityArg("identityKey", key); err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if bytes.Equal(key, s.svc.self) {
		return res.SetUsername(s.svc.username)
	}
	return nil
}

func (s *server) UploadKeyPackage(context.Context, schema.NodeService_uploadKeyPackage) error {
	return notOffered("uploadKeyPackage")
}

func (s *server) Fetch(context.Context, schema.NodeService_fetch) error {
	return notOffered("fetch")
}

func (s *server) FetchWait(context.Context, schema.NodeService_fetchWait) error {
	return notOffered("fetchWait")
}

func (s *server) UploadHybridKey(context.Context, schema.NodeService_uploadHybridKey) error {
	return notOffered("uploadHybridKey")
}

func (s *server) OpaqueRegisterStart(context.Context, schema.NodeService_opaqueRegisterStart) error {
	return notOffered("opaqueRegisterStart")
}

func (s *server) OpaqueRegisterFinish(context.Context, schema.NodeService_opaqueRegisterFinish) error {
	return notOffered("opaqueRegisterFinish")
}

func (s *server) OpaqueLoginStart(context.Context, schema.NodeService_opaqueLoginStart) error {
	return notOffered("opaqueLoginStart")
}

func (s *server) OpaqueLoginFinish(context.Context, schema.NodeService_opaqueLoginFinish) error {
	return notOffered("opaqueLoginFinish")
}

func (s *server) PublishEndpoint(context.Context, schema.NodeService_publishEndpoint) error {
	return notOffered("publishEndpoint")
}

func (s *server) ResolveEndpoint(context.Context, schema.NodeService_resolveEndpoint) error {
	return notOffered("resolveEndpoint")
}

func (s *server) PeekWait(context.Context, schema.NodeService_peekWait) error {
	return notOffered("peekWait")
}

func (s *server) Peek(context.Context, schema.NodeService_peek) error {
	return notOffered("peek")
}

func (s *server) Ack(context.Context, schema.NodeService_ack) error {
	return notOffered("ack")
}

func (s *server) ServerInfo(context.Context, schema.NodeService_serverInfo) error {
	return notOffered("serverInfo")
}
