// Package home is a node's session with its home server: a pinned QUIC
// connection, an OPAQUE account, and the loss-free read of the node's
// inbox there.
//
// Run keeps the session up until its context ends:
//
//  1. Dial the server, pinning its certificate: the first connection
//     trusts any certificate and stores its SHA-256 fingerprint (trust on
//     first use; Config.OnPin shows it); every later connection refuses a
//     server presenting another one (ErrPinMismatch, which ends Run: a
//     changed certificate needs a person's decision, not a retry).
//  2. Register the username with OPAQUE if this node has no account there
//     yet, then log in. The password comes from Config.Password, asked
//     once per Session and kept in memory for re-logins.
//  3. Config.OnLogin uploads what the server keeps for the node (hybrid
//     key, KeyPackages) with the logged-in client; Client returns it from
//     then on.
//  4. Read the inbox with peekWait, which removes nothing; hand each
//     message, in seq order, to Config.Handle, which returns once its
//     outcome is on disk; then ack up to it. A crash anywhere in between
//     reads the message again, never loses it.
//
// A connection that drops is dialed again with backoff (RetryMin to
// RetryMax); Client returns nil meanwhile. Wrong passwords and refused
// accounts end Run with ErrLogin.
//
// # Storage
//
// Bucket "node.home" in the node's bbolt file:
//
//	"pin/" || server address      → SHA-256 certificate fingerprint (32 bytes)
//	"account/" || server address  → username registered there
package home

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/rpc"
	"github.com/quicproquo/qpq/rpc/errcode"
)

// Defaults for the zero Config.
const (
	DefaultRetryMin = 250 * time.Millisecond
	DefaultRetryMax = 30 * time.Second
	// DefaultPeekWait is how long one peekWait waits on the server.
	DefaultPeekWait = 30 * time.Second
	// PeekLimit bounds the messages one peekWait returns.
	PeekLimit = 64
	// CallTimeout bounds the session's own calls (login, uploads, ack).
	CallTimeout = 30 * time.Second
)

var bucketName = []byte("node.home")

// Errors that end Run.
var (
	// ErrPinMismatch: the server presented a certificate other than the
	// pinned one.
	ErrPinMismatch = errors.New("home: the server's certificate changed")
	// ErrLogin: the server refused the account (wrong password, a name
	// taken by someone else, an identity registered under another name).
	ErrLogin = errors.New("home: login refused")
)

// Config configures a Session. Addr, Username, Identity, Password, DB and
// Handle are required.
type Config struct {
	// Addr is the server's host:port.
	Addr     string
	Username string
	Identity ed25519.PublicKey
	// Password returns the account's password; it is called once, when
	// first needed.
	Password func(ctx context.Context) ([]byte, error)
	DB       *bolt.DB
	// OnPin is told the server's fingerprint when it is pinned (first
	// is true: trust on first use) and on every later connection.
	OnPin func(fp rpc.Fingerprint, first bool)
	// OnLogin runs after each login with the logged-in client; an error
	// drops the connection and retries.
	OnLogin func(ctx context.Context, c *rpc.Client) error
	// OnDown is called when a logged-in session ends.
	OnDown func(err error)
	// Handle processes one message of the inbox and returns once its
	// outcome is durable; an error leaves it (and those after it) in the
	// inbox, and the session reads it again on the same connection after
	// a delay that grows from RetryMin to RetryMax while Handle keeps
	// failing (a full disk, say, gives no reason to log in again).
	Handle func(ctx context.Context, data []byte) error
	// OnHandleError is told the error of the first failing Handle of a
	// run of failures.
	OnHandleError func(err error)
	// RetryMin, RetryMax, PeekWait: see the defaults.
	RetryMin, RetryMax, PeekWait time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// Session is a node's session with one home server.
type Session struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex // guards the fields below
	client   *rpc.Client
	password []byte
}

// New returns a session; Run runs it.
func New(cfg Config) (*Session, error) {
	if cfg.Addr == "" || cfg.Username == "" || len(cfg.Identity) != ed25519.PublicKeySize ||
		cfg.Password == nil || cfg.DB == nil || cfg.Handle == nil {
		return nil, errors.New("home: Config needs Addr, Username, Identity, Password, DB and Handle")
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.PeekWait <= 0 {
		cfg.PeekWait = DefaultPeekWait
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	err := cfg.DB.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("home: create bucket: %w", err)
	}
	return &Session{cfg: cfg, log: log.With("component", "home", "server", cfg.Addr)}, nil
}

// Client returns the logged-in client, or nil while there is none. Calls
// on it fail once the connection drops; the session dials again.
func (s *Session) Client() *rpc.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

// Pin returns the pinned fingerprint of the server, if any.
func (s *Session) Pin() (rpc.Fingerprint, bool) {
	var fp rpc.Fingerprint
	var ok bool
	s.cfg.DB.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketName).Get(s.key("pin/")); len(v) == len(fp) {
			copy(fp[:], v)
			ok = true
		}
		return nil
	})
	return fp, ok
}

func (s *Session) key(prefix string) []byte { return []byte(prefix + s.cfg.Addr) }

func (s *Session) put(prefix string, v []byte) error {
	return s.cfg.DB.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketName).Put(s.key(prefix), v) })
}

func (s *Session) registered() bool {
	var ok bool
	s.cfg.DB.View(func(tx *bolt.Tx) error {
		ok = string(tx.Bucket(bucketName).Get(s.key("account/"))) == s.cfg.Username
		return nil
	})
	return ok
}

// Run keeps the session up until ctx ends (it then returns ctx.Err()), the
// pin is refused (ErrPinMismatch) or the account is (ErrLogin).
func (s *Session) Run(ctx context.Context) error {
	wait := s.cfg.RetryMin
	for {
		loggedIn, err := s.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrPinMismatch) || errors.Is(err, ErrLogin) {
			return err
		}
		if loggedIn {
			wait = s.cfg.RetryMin
		}
		s.log.Info("home server session ended; retrying", "in", wait, "err", err)
		if err := sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, s.cfg.RetryMax)
	}
}

// sleep waits about d (between d/2 and d, so that nodes retrying after
// the same event spread out) or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// session runs one connection: dial, log in, read the inbox until it
// fails. loggedIn reports whether it got that far.
func (s *Session) session(ctx context.Context) (loggedIn bool, err error) {
	pin, pinned := s.Pin()
	dctx, cancel := context.WithTimeout(ctx, CallTimeout)
	conn, err := rpc.Dial(dctx, s.cfg.Addr, rpc.DialOptions{Pin: pin, TrustOnFirstUse: !pinned})
	cancel()
	var mismatch *rpc.FingerprintMismatchError
	if errors.As(err, &mismatch) {
		return false, fmt.Errorf("%w: it presents %s, but %s is pinned; if the operator confirms the change, "+
			"start with a new data directory or remove the pin", ErrPinMismatch, mismatch.Got, mismatch.Want)
	}
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if !pinned {
		fp := conn.Fingerprint()
		if err := s.put("pin/", fp[:]); err != nil {
			return false, fmt.Errorf("home: storing the pin: %w", err)
		}
	}
	if s.cfg.OnPin != nil {
		s.cfg.OnPin(conn.Fingerprint(), !pinned)
	}
	c := conn.Client()
	if err := s.login(ctx, c); err != nil {
		return false, err
	}
	// Client is usable from here: OnLogin's work (and what it tells
	// others, such as "ready") may rely on it.
	s.mu.Lock()
	s.client = c
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.client = nil
		s.mu.Unlock()
	}()
	if s.cfg.OnLogin != nil {
		lctx, cancel := context.WithTimeout(ctx, CallTimeout)
		err := s.cfg.OnLogin(lctx, c)
		cancel()
		if err != nil {
			return false, err
		}
	}
	s.log.Info("logged in")
	err = s.read(ctx, c)
	if s.cfg.OnDown != nil {
		s.cfg.OnDown(err)
	}
	return true, err
}

// login registers the account if this node has none there, then logs in.
func (s *Session) login(ctx context.Context, c *rpc.Client) error {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	pw, err := s.pw(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLogin, err)
	}
	if !s.registered() {
		err := c.Register(ctx, s.cfg.Username, pw, s.cfg.Identity)
		switch {
		case err == nil:
			s.log.Info("registered", "user", s.cfg.Username)
		case errcode.Of(err) == errcode.AlreadyExists:
			// Registered before (by this identity, in an earlier run
			// that crashed before recording it, or by someone else:
			// the login tells).
		case errors.Is(err, rpc.ErrDisconnected) || ctx.Err() != nil:
			return err
		default:
			return fmt.Errorf("%w: registering %q: %v", ErrLogin, s.cfg.Username, err)
		}
	}
	if _, err := c.Login(ctx, s.cfg.Username, pw, s.cfg.Identity); err != nil {
		switch errcode.Of(err) {
		case errcode.Unauthenticated:
			return fmt.Errorf("%w: wrong password, or %q is someone else's account there", ErrLogin, s.cfg.Username)
		case errcode.PermissionDenied:
			return fmt.Errorf("%w: %q is registered there with another identity key", ErrLogin, s.cfg.Username)
		}
		return err
	}
	if !s.registered() {
		if err := s.put("account/", []byte(s.cfg.Username)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Session) pw(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.password == nil {
		pw, err := s.cfg.Password(ctx)
		if err != nil {
			return nil, err
		}
		if len(pw) == 0 {
			return nil, errors.New("empty password")
		}
		s.password = bytes.Clone(pw)
	}
	return s.password, nil
}

// read processes the inbox in seq order until the connection fails.
func (s *Session) read(ctx context.Context, c *rpc.Client) error {
	self := []byte(s.cfg.Identity)
	var wait time.Duration // before reading again after Handle failed; 0 while it succeeds
	for {
		envs, err := c.PeekWait(ctx, self, nil, s.cfg.PeekWait, PeekLimit)
		if err != nil {
			return err
		}
		var last uint64
		var herr error
		for _, e := range envs {
			if e.Seq <= last {
				continue // never seen from a correct server; never ack backwards
			}
			if herr = s.cfg.Handle(ctx, e.Data); herr != nil {
				break
			}
			last = e.Seq
		}
		if last > 0 {
			actx, cancel := context.WithTimeout(ctx, CallTimeout)
			err := c.Ack(actx, self, nil, last)
			cancel()
			if err != nil {
				return err
			}
		}
		if herr == nil {
			wait = 0
			continue
		}
		if wait == 0 {
			wait = s.cfg.RetryMin
			if s.cfg.OnHandleError != nil {
				s.cfg.OnHandleError(herr)
			}
		} else {
			wait = min(2*wait, s.cfg.RetryMax)
		}
		s.log.Warn("could not process an inbox message; reading it again", "in", wait, "err", herr)
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}
