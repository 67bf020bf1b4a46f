package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/node/identity"
	"github.com/quicproquo/qpq/p2p"
	"github.com/quicproquo/qpq/rpc"
)

// lineWriter hands the lines written to it to a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line) // incomplete: keep it
			return len(p), nil
		}
		select {
		case w.lines <- strings.TrimSpace(line):
		default:
		}
	}
}

// startup reads the lines `qpq serve` prints on start.
type startup struct {
	addr    string
	fp      rpc.Fingerprint
	metrics string
	domain  string
	p2p     string // the AddrInfo JSON
	admin   string // the admin socket's path
}

func readStartup(t *testing.T, lines <-chan string) startup {
	t.Helper()
	var s startup
	timeout := time.After(30 * time.Second)
	for s.fp.IsZero() {
		select {
		case l := <-lines:
			switch {
			case strings.HasPrefix(l, "listening on "):
				s.addr = strings.Fields(l)[2]
			case strings.HasPrefix(l, "metrics on "):
				s.metrics = strings.TrimPrefix(l, "metrics on ")
			case strings.HasPrefix(l, "domain "):
				s.domain = strings.TrimPrefix(l, "domain ")
			case strings.HasPrefix(l, "p2p "):
				s.p2p = strings.TrimPrefix(l, "p2p ")
			case strings.HasPrefix(l, "admin socket "):
				s.admin = strings.Fields(l)[2]
			case strings.HasPrefix(l, "fingerprint "):
				fp, err := rpc.ParseFingerprint(strings.TrimPrefix(l, "fingerprint "))
				if err != nil {
					t.Fatal(err)
				}
				s.fp = fp
			}
		case <-timeout:
			t.Fatal("qpq serve printed no fingerprint")
		}
	}
	return s
}

func TestServe(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	data := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	out := &lineWriter{lines: make(chan string, 16)}
	done := make(chan error, 1)
	go func() {
		// mDNS stays off: tests never announce on the real interface.
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data", data, "--metrics", "127.0.0.1:0",
			"--domain", "serve.test", "--p2p-listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--mdns=false"}, out, io.Discard)
	}()
	s := readStartup(t, out.lines)
	if s.domain != "serve.test" {
		t.Errorf("domain line %q", s.domain)
	}
	// The libp2p AddrInfo is printed for nodes to use as their relay; its
	// peer ID is the server's identity key under DATA.
	var info peer.AddrInfo
	if err := info.UnmarshalJSON([]byte(s.p2p)); err != nil || len(info.Addrs) == 0 {
		t.Fatalf("p2p line %q: %v", s.p2p, err)
	}
	id, err := identity.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := p2p.PeerID(id.PublicKey()); info.ID != want {
		t.Errorf("p2p peer %s, identity's %s", info.ID, want)
	}

	// The fingerprint printed is the certificate's under DATA/tls.
	cert, err := rpc.LoadCertificate(filepath.Join(data, "tls", "cert.pem"), filepath.Join(data, "tls", "key.pem"))
	if err != nil || rpc.CertificateFingerprint(cert) != s.fp {
		t.Fatalf("printed %s, certificate %v (%v)", s.fp, rpc.CertificateFingerprint(cert), err)
	}
	conn, err := rpc.Dial(ctx, s.addr, rpc.DialOptions{Pin: s.fp})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := conn.Client().Health(ctx); err != nil || st != "ok" {
		t.Fatalf("health = %q, %v", st, err)
	}
	conn.Close()

	resp, err := http.Get(s.metrics)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(`qpq_relay_calls_total{code="ok",method="health"} 1`)) {
		t.Fatalf("metrics lack the health call:\n%s", body)
	}
	http.DefaultClient.CloseIdleConnections()

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
}

// buildQPQ builds the qpq binary once per test run.
var buildQPQ = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "qpq-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "qpq")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// serverProcess runs `qpq serve` as a child process.
type serverProcess struct {
	cmd  *exec.Cmd
	once sync.Once
	startup
}

func startProcess(t *testing.T, data string) *serverProcess {
	t.Helper()
	bin, err := buildQPQ()
	if err != nil {
		t.Fatal(err)
	}
	out := &lineWriter{lines: make(chan string, 16)}
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data", data, "--rate-limit=off", "--p2p=false", "--mdns=false")
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd}
	t.Cleanup(p.stop)
	p.startup = readStartup(t, out.lines)
	return p
}

// stop kills the process and waits for it; it is idempotent.
func (p *serverProcess) stop() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	})
}

// TestCrashKeepsAcknowledgedMessages kills a server with SIGKILL in the
// middle of a stream of enqueues from several clients and restarts it on
// the same data: every enqueue that got a seq is there with that seq and
// payload, and seqs continue above.
func TestCrashKeepsAcknowledgedMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the qpq binary")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	data := t.TempDir()
	p := startProcess(t, data)
	ctx := context.Background()

	id, _, _ := ed25519.GenerateKey(rand.Reader)
	conn, err := rpc.Dial(ctx, p.addr, rpc.DialOptions{Pin: p.fp})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Client().Register(ctx, "crash", []byte("pw"), id); err != nil {
		t.Fatal(err)
	}
	token, err := conn.Client().Login(ctx, "crash", []byte("pw"), id)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()

	const writers = 4
	// Cancelled right after the kill: calls in flight then fail at once
	// instead of waiting for QUIC's idle timeout to notice the dead server.
	wctx, cancelWriters := context.WithCancel(ctx)
	defer cancelWriters()
	var mu sync.Mutex
	acked := map[uint64]string{} // seq -> payload
	var wg sync.WaitGroup
	killAt := make(chan struct{})
	var once sync.Once
	for w := range writers {
		c, err := rpc.Dial(ctx, p.addr, rpc.DialOptions{Pin: p.fp})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Client().SetToken(token)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				payload := fmt.Sprintf("writer %d message %d", w, i)
				seq, err := c.Client().Enqueue(wctx, id, nil, []byte(payload))
				if err != nil {
					return // the server died
				}
				mu.Lock()
				if prev, dup := acked[seq]; dup {
					t.Errorf("seq %d acknowledged twice (%q, %q)", seq, prev, payload)
				}
				acked[seq] = payload
				if len(acked) >= 300 {
					once.Do(func() { close(killAt) })
				}
				mu.Unlock()
			}
		}()
	}
	<-killAt
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.stop()
	cancelWriters()
	wg.Wait()

	p = startProcess(t, data)
	defer p.stop() // before the leak check
	c, err := rpc.Dial(ctx, p.addr, rpc.DialOptions{Pin: p.fp})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Client().SetToken(token) // tokens survive the crash too
	// A few hundred short messages: one peek returns them all.
	envs, err := c.Client().Peek(ctx, id, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[uint64]string{}
	var maxSeq uint64
	for _, e := range envs {
		stored[e.Seq] = string(e.Data)
		maxSeq = max(maxSeq, e.Seq)
	}
	for seq, payload := range acked {
		if stored[seq] != payload {
			t.Errorf("acknowledged seq %d (%q) after restart: %q", seq, payload, stored[seq])
		}
	}
	for seq := uint64(1); seq <= maxSeq; seq++ {
		if _, ok := stored[seq]; !ok {
			t.Errorf("seq %d missing: seqs must be dense", seq)
		}
	}
	next, err := c.Client().Enqueue(ctx, id, nil, []byte("after the crash"))
	if err != nil {
		t.Fatal(err)
	}
	if next <= maxSeq {
		t.Fatalf("seq after restart %d, not above %d", next, maxSeq)
	}
	t.Logf("%d acknowledged, %d stored (the rest were committed but not yet answered), next seq %d", len(acked), len(stored), next)
}
