// Package auth is the server side of quicproquo accounts: OPAQUE
// registration and login (RFC 9807, parameters in rpc/pake) and the
// session tokens a login issues.
//
// The server's OPAQUE key material (OPRF seed, AKE key pair) is made on
// first start and kept in the store. A login for an unknown username runs
// against a fake record derived from the username and a server secret, so
// its KE2 has the shape and timing of a real one (no user enumeration).
//
// A session token is 32 random bytes. The server stores only
// SHA-256(token): its first 16 bytes select the record, the other 16 are
// compared in constant time. Tokens carry their identity and expiry and
// survive restarts.
//
// Failed logins are limited per username and per address
// (ratelimit.Keyed.Begin/End): an attempt holds budget from loginStart
// until it succeeds, fails, or is abandoned.
package auth

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bytemare/ecc"
	"github.com/bytemare/opaque"
	"github.com/bytemare/opaque/message"

	"github.com/quicproquo/qpq/relay/ratelimit"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/rpc/pake"
)

// Defaults of Config's zero values.
const (
	DefaultTokenLifetime = 24 * time.Hour
	DefaultLoginTTL      = time.Minute
)

// TokenSize is the length of a session token.
const TokenSize = 32

// MaxUsernameSize bounds a username in bytes.
const MaxUsernameSize = 64

// Config tunes Accounts. The zero value means the documented defaults.
type Config struct {
	// TokenLifetime is how long a session token is valid; 0 means
	// DefaultTokenLifetime.
	TokenLifetime time.Duration
	// LoginTTL is how long a started login waits for its finish; 0 means
	// DefaultLoginTTL.
	LoginTTL time.Duration
	// FailedLoginsPerUser and FailedLoginsPerAddr limit failed logins;
	// nil means unlimited.
	FailedLoginsPerUser, FailedLoginsPerAddr *ratelimit.Keyed
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Accounts registers users, runs logins and checks tokens. It is safe for
// concurrent use.
type Accounts struct {
	st       *store.Store
	cfg      Config
	srv      *opaque.Server
	fakeSeed []byte
	envLen   int // size of an OPAQUE envelope, for fake records
}

// Names of the server secrets in the store.
const (
	secretServerKey = "opaque/server-key-material"
	secretFakeSeed  = "opaque/fake-record-seed"
)

// New loads (or on first start creates and stores) the server's OPAQUE key
// material.
func New(st *store.Store, cfg Config) (*Accounts, error) {
	if cfg.TokenLifetime <= 0 {
		cfg.TokenLifetime = DefaultTokenLifetime
	}
	if cfg.LoginTTL <= 0 {
		cfg.LoginTTL = DefaultLoginTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	conf := pake.Configuration()
	enc, err := st.Secret(secretServerKey, func() ([]byte, error) {
		sk, pk := conf.KeyGen()
		return encodeKeyMaterial(&opaque.ServerKeyMaterial{PrivateKey: sk, PublicKeyBytes: pk.Encode(), OPRFGlobalSeed: conf.GenerateOPRFSeed()}), nil
	})
	if err != nil {
		return nil, fmt.Errorf("auth: server key material: %w", err)
	}
	skm, err := decodeKeyMaterial(enc)
	if err != nil {
		return nil, fmt.Errorf("auth: stored server key material: %w", err)
	}
	srv, err := conf.Server()
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if err := srv.SetKeyMaterial(skm); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	seed, err := st.Secret(secretFakeSeed, func() ([]byte, error) { return randomBytes(32), nil })
	if err != nil {
		return nil, fmt.Errorf("auth: fake-record seed: %w", err)
	}
	probe, err := conf.GetFakeRecord([]byte("probe"))
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return &Accounts{st: st, cfg: cfg, srv: srv, fakeSeed: seed, envLen: len(probe.Envelope)}, nil
}

// The stored server key material (the library's own encoding cannot
// decode a key material without a server identity, which is what the
// default AKE identities mean):
//
//	v1 | private key [32] | public key [32] | OPRF seed [64]
const keyMaterialLen = 1 + 32 + 32 + 64

func encodeKeyMaterial(skm *opaque.ServerKeyMaterial) []byte {
	b := make([]byte, 0, keyMaterialLen)
	b = append(b, 1)
	b = append(b, skm.PrivateKey.Encode()...)
	b = append(b, skm.PublicKeyBytes...)
	return append(b, skm.OPRFGlobalSeed...)
}

func decodeKeyMaterial(b []byte) (*opaque.ServerKeyMaterial, error) {
	if len(b) != keyMaterialLen || b[0] != 1 {
		return nil, fmt.Errorf("%d bytes, not a v1 record of %d", len(b), keyMaterialLen)
	}
	sk, err := opaque.DeserializeScalar(ecc.Ristretto255Sha512, b[1:33])
	if err != nil {
		return nil, err
	}
	skm := &opaque.ServerKeyMaterial{PrivateKey: sk, PublicKeyBytes: bytes.Clone(b[33:65]), OPRFGlobalSeed: bytes.Clone(b[65:])}
	// Server.SetKeyMaterial checks that the public key is the private
	// key's; check here too, so a decoded value is a valid one.
	pk, err := opaque.DeserializeElement(ecc.Ristretto255Sha512, skm.PublicKeyBytes)
	if err != nil {
		return nil, err
	}
	if !pk.Equal(ecc.Ristretto255Sha512.Base().Multiply(sk)) {
		return nil, errors.New("public key does not match private key")
	}
	return skm, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return b
}

// CheckUsername validates a username: 1 to MaxUsernameSize bytes of UTF-8,
// printable, without leading or trailing spaces (it is shown to people and
// announced as an mDNS instance name), and without '@' (users are
// name@domain).
func CheckUsername(name string) error {
	switch {
	case name == "":
		return errcode.New(errcode.InvalidArgument, "username is empty")
	case len(name) > MaxUsernameSize:
		return errcode.Errorf(errcode.InvalidArgument, "username is longer than %d bytes", MaxUsernameSize)
	case !utf8.ValidString(name):
		return errcode.New(errcode.InvalidArgument, "username is not UTF-8")
	case name[0] == ' ' || name[len(name)-1] == ' ':
		return errcode.New(errcode.InvalidArgument, "username starts or ends with a space")
	case strings.ContainsRune(name, '@'):
		// Users are name@domain: a name holding '@' would be ambiguous.
		return errcode.New(errcode.InvalidArgument, "username contains '@', which separates a name from its domain")
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return errcode.Errorf(errcode.InvalidArgument, "username contains the unprintable character %U", r)
		}
	}
	return nil
}

// RegisterStart answers an OPAQUE RegistrationRequest for username from
// addr. Each answer evaluates the OPRF under the username's key, which
// together with one KE2 would let a client test password guesses offline;
// so a taken username is refused, and every answer spends the same budget
// as a failed login (also for names not registered yet, whose key is the
// one a later registration gets).
func (a *Accounts) RegisterStart(username, addr string, request []byte) ([]byte, error) {
	if err := CheckUsername(username); err != nil {
		return nil, err
	}
	switch _, taken, err := a.st.User(username); {
	case err != nil:
		return nil, errcode.Storage(err)
	case taken:
		return nil, errcode.New(errcode.AlreadyExists, "username is taken")
	}
	req, err := a.srv.Deserialize.RegistrationRequest(request)
	if err != nil {
		return nil, errcode.New(errcode.InvalidArgument, "request is not an OPAQUE registration request")
	}
	if err := a.begin(username, addr); err != nil {
		return nil, err
	}
	a.end(username, addr, true)
	resp, err := a.srv.RegistrationResponse(req, []byte(username), nil)
	if err != nil {
		return nil, errcode.New(errcode.InvalidArgument, "request is not an OPAQUE registration request")
	}
	return resp.Serialize(), nil
}

// RegisterFinish stores username's RegistrationRecord bound to identity.
func (a *Accounts) RegisterFinish(username string, upload []byte, identity store.Key) error {
	if err := CheckUsername(username); err != nil {
		return err
	}
	if _, err := a.srv.Deserialize.RegistrationRecord(upload); err != nil {
		return errcode.New(errcode.InvalidArgument, "upload is not an OPAQUE registration record")
	}
	err := a.st.CreateUser(username, store.User{Identity: identity, Record: upload})
	switch {
	case errors.Is(err, store.ErrUsernameTaken):
		return errcode.New(errcode.AlreadyExists, "username is taken")
	case errors.Is(err, store.ErrIdentityTaken):
		return errcode.New(errcode.AlreadyExists, "identity key is registered to another username")
	case err != nil:
		return errcode.Storage(err)
	}
	return nil
}

// PendingLogin is a login between its start and its finish. Exactly one of
// Finish or Abandon ends it.
type PendingLogin struct {
	a        *Accounts
	username string
	addr     string
	identity store.Key // registered identity; zero for an unknown user
	known    bool
	mac      []byte
	expires  time.Time
	once     sync.Once
}

// LoginStart answers KE1 for username from addr (the rate-limit key of
// the caller's address) with KE2.
func (a *Accounts) LoginStart(username, addr string, ke1 []byte) (*PendingLogin, []byte, error) {
	if err := CheckUsername(username); err != nil {
		return nil, nil, err
	}
	msg, err := a.srv.Deserialize.KE1(ke1)
	if err != nil {
		return nil, nil, errcode.New(errcode.InvalidArgument, "request is not an OPAQUE KE1")
	}
	u, known, err := a.st.User(username)
	if err != nil {
		return nil, nil, errcode.Storage(err)
	}
	var rec *opaque.ClientRecord
	if known {
		r, err := a.srv.Deserialize.RegistrationRecord(u.Record)
		if err != nil {
			return nil, nil, errcode.Storage(fmt.Errorf("stored record of a user: %w", err))
		}
		rec = &opaque.ClientRecord{RegistrationRecord: r, CredentialIdentifier: []byte(username)}
	} else {
		rec = a.fakeRecord(username)
	}
	if err := a.begin(username, addr); err != nil {
		return nil, nil, err
	}
	ke2, out, err := a.srv.GenerateKE2(msg, rec)
	p := &PendingLogin{a: a, username: username, addr: addr, identity: u.Identity, known: known, expires: a.cfg.Now().Add(a.cfg.LoginTTL)}
	if err != nil {
		p.end(true)
		return nil, nil, errcode.New(errcode.InvalidArgument, "request is not an OPAQUE KE1")
	}
	p.mac = out.ClientMAC
	return p, ke2.Serialize(), nil
}

// fakeRecord derives a stable record for an unknown username, so that
// repeated logins for it look like logins for one real account.
func (a *Accounts) fakeRecord(username string) *opaque.ClientRecord {
	okm, err := hkdf.Key(sha512.New, a.fakeSeed, nil, "quicproquo/opaque/fake-record/v1\x00"+username, 128)
	if err != nil {
		panic(err) // only for lengths beyond HKDF's limit; 128 is not
	}
	g := ecc.Ristretto255Sha512
	sk := g.HashToScalar(okm[:64], []byte("quicproquo/opaque/fake-record-key/v1"))
	return &opaque.ClientRecord{
		CredentialIdentifier: []byte(username),
		RegistrationRecord: &message.RegistrationRecord{
			ClientPublicKey: g.Base().Multiply(sk),
			MaskingKey:      okm[64:],
			Envelope:        make([]byte, a.envLen),
		},
	}
}

// Expired reports whether the login is past its TTL.
func (p *PendingLogin) Expired() bool { return !p.a.cfg.Now().Before(p.expires) }

// Username returns the username the login is for.
func (p *PendingLogin) Username() string { return p.username }

// Abandon ends a login that will not be finished; it counts as failed.
func (p *PendingLogin) Abandon() { p.end(true) }

func (p *PendingLogin) end(failed bool) {
	p.once.Do(func() { p.a.end(p.username, p.addr, failed) })
}

// begin opens an attempt against the failed-login budgets of username and
// addr; end closes it.
func (a *Accounts) begin(username, addr string) error {
	if !a.cfg.FailedLoginsPerUser.Begin(username) {
		return errcode.New(errcode.ResourceExhausted, "too many failed logins for this username; try again later")
	}
	if !a.cfg.FailedLoginsPerAddr.Begin(addr) {
		a.cfg.FailedLoginsPerUser.End(username, false)
		return errcode.New(errcode.ResourceExhausted, "too many failed logins from this address; try again later")
	}
	return nil
}

func (a *Accounts) end(username, addr string, failed bool) {
	a.cfg.FailedLoginsPerUser.End(username, failed)
	a.cfg.FailedLoginsPerAddr.End(addr, failed)
}

// Finish checks KE3 and that identity is the registered one, and returns a
// new session token for it.
func (p *PendingLogin) Finish(ke3 []byte, identity store.Key) ([]byte, error) {
	if p.Expired() {
		p.end(true)
		return nil, errcode.New(errcode.FailedPrecondition, "login expired; start again")
	}
	msg, err := p.a.srv.Deserialize.KE3(ke3)
	if err != nil {
		p.end(true)
		return nil, errcode.New(errcode.InvalidArgument, "finalization is not an OPAQUE KE3")
	}
	if err := p.a.srv.LoginFinish(msg, p.mac); err != nil || !p.known {
		p.end(true)
		return nil, errcode.New(errcode.Unauthenticated, "wrong username or password")
	}
	p.end(false) // the password was right
	if subtle.ConstantTimeCompare(identity[:], p.identity[:]) != 1 {
		return nil, errcode.New(errcode.PermissionDenied, "identity key is not the one registered for this username")
	}
	return p.a.IssueToken(p.identity)
}

// IssueToken returns a new session token for identity without a login:
// for operator tooling and test fixtures. Clients get tokens from Finish.
func (a *Accounts) IssueToken(identity store.Key) ([]byte, error) {
	token := randomBytes(TokenSize)
	sel, ver := split(token)
	err := a.st.PutToken(sel, store.Token{Verifier: ver, Identity: identity, Expiry: a.cfg.Now().Add(a.cfg.TokenLifetime)})
	if err != nil {
		return nil, errcode.Storage(err)
	}
	return token, nil
}

func split(token []byte) (sel [store.SelectorSize]byte, ver [store.VerifierSize]byte) {
	h := sha256.Sum256(token)
	copy(sel[:], h[:store.SelectorSize])
	copy(ver[:], h[store.SelectorSize:])
	return sel, ver
}

// Session is what a valid token stands for.
type Session struct {
	Identity store.Key
	// ID names the session without revealing the token (hex of the
	// selector), for rate limiting and logs.
	ID string
}

// Authenticate returns the session of a token.
func (a *Accounts) Authenticate(token []byte) (Session, error) {
	s, _, err := a.authenticate(token)
	return s, err
}

func (a *Accounts) authenticate(token []byte) (Session, time.Time, error) {
	if len(token) == 0 {
		return Session{}, time.Time{}, errcode.New(errcode.Unauthenticated, "missing access token; log in first")
	}
	if len(token) != TokenSize {
		return Session{}, time.Time{}, errcode.New(errcode.Unauthenticated, "malformed access token")
	}
	sel, ver := split(token)
	t, ok, err := a.st.Token(sel)
	if err != nil {
		return Session{}, time.Time{}, errcode.Storage(err)
	}
	if !ok || subtle.ConstantTimeCompare(t.Verifier[:], ver[:]) != 1 {
		return Session{}, time.Time{}, errcode.New(errcode.Unauthenticated, "unknown access token; log in again")
	}
	if !a.cfg.Now().Before(t.Expiry) {
		return Session{}, time.Time{}, errExpired
	}
	return Session{Identity: t.Identity, ID: fmt.Sprintf("%x", sel)}, t.Expiry, nil
}

var errExpired = errcode.New(errcode.Unauthenticated, "access token expired; log in again")

// SessionCache authenticates the calls of one connection: it remembers
// the last token it accepted, so that the next calls presenting the same
// token (a client sends its token with every call) skip the store's read
// transaction and the token's hash. An entry holds only while the token
// has not expired and no token was deleted since it was looked up
// (store.TokenEpoch), so an evicted or swept token is refused on the next
// call as without the cache. Safe for concurrent use.
type SessionCache struct {
	a *Accounts

	mu     sync.Mutex
	ok     bool
	token  [TokenSize]byte
	s      Session
	expiry time.Time
	epoch  uint64
}

// NewSessionCache returns an empty cache for one connection.
func (a *Accounts) NewSessionCache() *SessionCache { return &SessionCache{a: a} }

// Authenticate is Accounts.Authenticate, answered from the cache when it
// holds token.
func (c *SessionCache) Authenticate(token []byte) (Session, error) {
	epoch := c.a.st.TokenEpoch() // before the lookup: see store.TokenEpoch
	c.mu.Lock()
	hit := c.ok && len(token) == TokenSize && subtle.ConstantTimeCompare(token, c.token[:]) == 1 && c.epoch == epoch
	s, expiry := c.s, c.expiry
	c.mu.Unlock()
	if hit {
		if !c.a.cfg.Now().Before(expiry) {
			return Session{}, errExpired
		}
		return s, nil
	}
	s, expiry, err := c.a.authenticate(token)
	if err != nil {
		return Session{}, err
	}
	c.mu.Lock()
	c.ok, c.s, c.expiry, c.epoch = true, s, expiry, epoch
	copy(c.token[:], token)
	c.mu.Unlock()
	return s, nil
}

// DeleteExpired removes expired tokens from the store.
func (a *Accounts) DeleteExpired() (int, error) { return a.st.DeleteExpiredTokens(a.cfg.Now()) }
