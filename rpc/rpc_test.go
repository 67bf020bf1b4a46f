package rpc

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/rpc/errcode"
	"github.com/quicproquo/qpq/schema"
)

// testService answers health and, for limit tests, blocks fetchWait until
// released. Every other method is unimplemented.
type testService struct {
	schema.NodeService_Server // nil: other methods panic if called
	release                   chan struct{}
	waiting                   chan struct{}
}

func (s *testService) Health(_ context.Context, call schema.NodeService_health) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetStatus("ok")
}

func (s *testService) FetchWait(ctx context.Context, call schema.NodeService_fetchWait) error {
	call.Go()
	s.waiting <- struct{}{}
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return errcode.New(errcode.NotFound, "released")
}

func (s *testService) Enqueue(_ context.Context, call schema.NodeService_enqueue) error {
	p, err := call.Args().Payload()
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetSeq(uint64(len(p)))
	return nil
}

type server struct {
	addr string
	fp   Fingerprint
	svc  *testService
}

func startServer(t *testing.T, opts ListenOptions) *server {
	t.Helper()
	cert, err := LoadOrCreateCertificate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0", cert, opts)
	if err != nil {
		t.Fatal(err)
	}
	svc := &testService{release: make(chan struct{}), waiting: make(chan struct{}, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ln.Serve(ctx, func(Peer) schema.NodeService_Server { return svc }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &server{addr: ln.Addr().String(), fp: CertificateFingerprint(cert), svc: svc}
}

func dial(t *testing.T, s *server) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), s.addr, DialOptions{Pin: s.fp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestDialPinning(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, ListenOptions{})
		ctx := context.Background()

		c := dial(t, s)
		if st, err := c.Client().Health(ctx); err != nil || st != "ok" {
			t.Fatalf("health = %q, %v", st, err)
		}
		if c.Fingerprint() != s.fp {
			t.Fatalf("fingerprint seen %s, server's %s", c.Fingerprint(), s.fp)
		}

		tofu, err := Dial(ctx, s.addr, DialOptions{TrustOnFirstUse: true})
		if err != nil {
			t.Fatal(err)
		}
		if tofu.Fingerprint() != s.fp {
			t.Fatalf("TOFU saw %s, server's is %s", tofu.Fingerprint(), s.fp)
		}
		tofu.Close()

		wrong := s.fp
		wrong[0] ^= 1
		_, err = Dial(ctx, s.addr, DialOptions{Pin: wrong})
		var mismatch *FingerprintMismatchError
		if !errors.As(err, &mismatch) || mismatch.Got != s.fp || mismatch.Want != wrong {
			t.Fatalf("dial with a wrong pin: %v", err)
		}

		if _, err := Dial(ctx, s.addr, DialOptions{}); !errors.Is(err, ErrNoPin) {
			t.Fatalf("dial without pin: %v", err)
		}
	})
}

func TestConnectionEndsWithServer(t *testing.T) {
	defer goleak.VerifyNone(t)
	cert, _ := LoadOrCreateCertificate(t.TempDir())
	ln, err := Listen("127.0.0.1:0", cert, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc := &testService{release: make(chan struct{}), waiting: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ln.Serve(ctx, func(Peer) schema.NodeService_Server { return svc }) }()
	c, err := Dial(context.Background(), ln.Addr().String(), DialOptions{Pin: CertificateFingerprint(cert)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client().Health(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-c.Done() // the server closed it
	if _, err := c.Client().Health(context.Background()); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("call after server stop: %v", err)
	}
	c.Close()
}

// A client still holding a connection to a server that died without
// closing it (a crash: every connection gone, nothing sent) learns so from
// its next packet once the server runs again with the same certificate:
// the new run answers it with a stateless reset. Without one, the call
// below would wait for the idle timeout (90 s) and end with its deadline.
func TestRestartedServerResetsConnections(t *testing.T) {
	defer goleak.VerifyNone(t)
	cert, err := LoadOrCreateCertificate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	svc := &testService{release: make(chan struct{}), waiting: make(chan struct{}, 1)}
	serve := func(addr string) (ln *Listener, stop func() error) {
		ln, err := Listen(addr, cert, ListenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- ln.Serve(ctx, func(Peer) schema.NodeService_Server { return svc }) }()
		return ln, func() error { cancel(); return <-done }
	}
	// crashed returns a client connected to a server that has crashed,
	// and the crashed server's address; ok is false when the client
	// heard of the crash before the server ran again (below).
	crashed := func() (c *Conn, addr string, ok bool) {
		first, stopFirst := serve("127.0.0.1:0")
		addr = first.Addr().String()
		c, err := Dial(context.Background(), addr, DialOptions{Pin: CertificateFingerprint(cert)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Client().Health(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Let the client's delayed ACK of that answer (at most 25 ms) go
		// out while the server is up: a packet to the closed port would
		// come back as ICMP port unreachable, which tells the client
		// without any reset. After it the client sends nothing until the
		// next call.
		time.Sleep(200 * time.Millisecond)
		// The crash: closing the transport drops every connection
		// silently (Serve then ends with its accept error).
		first.tr.Close()
		stopFirst()
		select {
		case <-c.Done():
			c.Close()
			return nil, "", false
		default:
			return c, addr, true
		}
	}
	// On a loaded machine the ACK can be later than the sleep: then the
	// test would prove nothing, so it sets the scene again.
	var c *Conn
	var addr string
	for try := 0; ; try++ {
		var ok bool
		if c, addr, ok = crashed(); ok {
			break
		}
		if try == 4 {
			t.Fatal("the client heard of the crash before the server ran again, five times: the test proves nothing")
		}
	}
	defer c.Close()

	_, stopSecond := serve(addr)
	defer func() {
		if err := stopSecond(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Client().Health(ctx); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("call on the connection of the previous run: %v, want %v", err, ErrDisconnected)
	}
	<-c.Done()
}

// opaqueSigner is a private key with no PKCS #8 form, as an HSM's is.
type opaqueSigner struct{ crypto.Signer }

// The reset key is the same each time a certificate is loaded (so a
// restarted server can reset its previous run's connections), differs
// between certificates and between listeners of other ALPNs, and is off
// for a private key it cannot read.
func TestStatelessResetKey(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	key := func(dir string) *quic.StatelessResetKey {
		t.Helper()
		cert, err := LoadOrCreateCertificate(dir)
		if err != nil {
			t.Fatal(err)
		}
		k := statelessResetKey(ServerTLSConfig(cert, ALPN))
		if k == nil {
			t.Fatal("no reset key for a certificate")
		}
		return k
	}
	a := key(dirA)
	if again := key(dirA); *again != *a {
		t.Error("the same certificate, loaded again, gave another reset key")
	}
	if b := key(dirB); *b == *a {
		t.Error("two certificates gave the same reset key")
	}
	cert, err := LoadOrCreateCertificate(dirA)
	if err != nil {
		t.Fatal(err)
	}
	if other := statelessResetKey(ServerTLSConfig(cert, "qpq-fed/1")); *other == *a {
		t.Error("two listeners of one certificate, with other ALPNs, share a reset key")
	}
	cert.PrivateKey = opaqueSigner{cert.PrivateKey.(crypto.Signer)}
	if k := statelessResetKey(ServerTLSConfig(cert, ALPN)); k != nil {
		t.Error("a reset key from a private key that has no PKCS #8 form")
	}
	if k := statelessResetKey(&tls.Config{}); k != nil {
		t.Error("a reset key without a certificate")
	}
}

func TestPendingCallLimit(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, ListenOptions{Serve: ServeOptions{MaxPendingCalls: 3}})
		c := dial(t, s)
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Client().FetchWait(ctx, nil, nil, time.Hour, 0)
				errs <- err
			}()
			<-s.svc.waiting
		}
		_, err := c.Client().Health(ctx)
		if errcode.Of(err) != errcode.ResourceExhausted {
			t.Fatalf("fourth call in flight: %v", err)
		}
		close(s.svc.release)
		wg.Wait()
		for range 3 {
			if err := <-errs; errcode.Of(err) != errcode.NotFound {
				t.Fatalf("released call: %v", err)
			}
		}
		if _, err := c.Client().Health(ctx); err != nil {
			t.Fatalf("call after the others returned: %v", err)
		}
	})
}

func TestMaxMessageSize(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, ListenOptions{Serve: ServeOptions{MaxMessageSize: 64 << 10}})
		c := dial(t, s)
		ctx := context.Background()
		if seq, err := c.Client().Enqueue(ctx, nil, nil, make([]byte, 32<<10)); err != nil || seq != 32<<10 {
			t.Fatalf("small message: %d, %v", seq, err)
		}
		// A message above the limit ends the connection: the server cannot
		// skip it without reading it.
		if _, err := c.Client().Enqueue(ctx, nil, nil, make([]byte, 128<<10)); !errors.Is(err, ErrDisconnected) {
			t.Fatalf("oversized message: %v", err)
		}
	})
}

func TestErrorsCarryCodes(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("", func(t *testing.T) {
		s := startServer(t, ListenOptions{})
		c := dial(t, s)
		close(s.svc.release)
		_, err := c.Client().FetchWait(context.Background(), nil, nil, 0, 0)
		var ce *errcode.Error
		if !errors.As(err, &ce) || ce.Code != errcode.NotFound || ce.Message != "released" {
			t.Fatalf("error = %#v", err)
		}
		// The raw exception text on the wire starts with the code.
		f, release := c.Client().Raw().FetchWait(context.Background(), nil)
		_, err = f.Struct()
		release()
		if err == nil || !strings.Contains(err.Error(), "not-found: released") {
			t.Fatalf("raw error %q", err)
		}
	})
}

func TestCertificateFiles(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateCertificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "tls", "key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v, mode %v", err, fi.Mode())
	}
	b, err := LoadOrCreateCertificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if CertificateFingerprint(a) != CertificateFingerprint(b) {
		t.Fatal("fingerprint changed on reload")
	}
	leaf := a.Leaf
	if leaf == nil || time.Until(leaf.NotAfter) < 50*365*24*time.Hour {
		t.Fatalf("certificate validity too short: %v", leaf)
	}
	// An operator's own files load too.
	op, err := LoadCertificate(filepath.Join(dir, "tls", "cert.pem"), filepath.Join(dir, "tls", "key.pem"))
	if err != nil || CertificateFingerprint(op) != CertificateFingerprint(a) {
		t.Fatalf("operator cert: %v", err)
	}
	// Half a certificate is reported, not replaced.
	os.Remove(filepath.Join(dir, "tls", "cert.pem"))
	if _, err := LoadOrCreateCertificate(dir); err == nil {
		t.Fatal("missing cert.pem beside key.pem was silently replaced")
	}
	var _ tls.Certificate = a
}

func TestParseFingerprint(t *testing.T) {
	var f Fingerprint
	for i := range f {
		f[i] = byte(i * 7)
	}
	s := f.String()
	if !strings.HasPrefix(s, "sha256:") || len(s) != 7+64 {
		t.Fatalf("String() = %q", s)
	}
	colons := make([]string, len(f))
	for i, b := range f {
		colons[i] = strings.ToUpper(string("0123456789abcdef"[b>>4]) + string("0123456789abcdef"[b&15]))
	}
	for _, in := range []string{s, s[7:], strings.ToUpper(s), " " + s + "\n", strings.Join(colons, ":")} {
		got, err := ParseFingerprint(in)
		if err != nil || got != f {
			t.Errorf("ParseFingerprint(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "sha256:", "sha256:zz" + s[9:], s + "00", "md5:" + s[7:]} {
		if _, err := ParseFingerprint(bad); err == nil {
			t.Errorf("ParseFingerprint(%q) accepted", bad)
		}
	}
}

func FuzzParseFingerprint(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("ab", 32))
	f.Add(strings.Repeat("AB:", 31) + "AB")
	f.Add("sha256:")
	f.Fuzz(func(t *testing.T, s string) {
		fp, err := ParseFingerprint(s)
		if err != nil {
			return
		}
		again, err := ParseFingerprint(fp.String())
		if err != nil || again != fp {
			t.Fatalf("%q parsed to %v, which does not round-trip", s, fp)
		}
	})
}
