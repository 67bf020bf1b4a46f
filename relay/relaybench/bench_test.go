package relaybench

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/relay"
	"github.com/quicproquo/qpq/rpc"
)

const payloadSize = 1024

// server is an in-process home server on loopback with durable storage in
// a temporary directory and rate limits off.
type server struct {
	relay *relay.Relay
	addr  string
	fp    rpc.Fingerprint
	cert  tls.Certificate
	stop  func()
}

func startServer(b *testing.B) *server {
	b.Helper()
	dir := b.TempDir()
	r, err := relay.Open(relay.Config{DataDir: dir, Rates: relay.RateLimits{Off: true}})
	if err != nil {
		b.Fatal(err)
	}
	cert, err := rpc.LoadOrCreateCertificate(dir)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := rpc.Listen("127.0.0.1:0", cert, rpc.ListenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	s := &server{relay: r, addr: ln.Addr().String(), fp: rpc.CertificateFingerprint(cert), cert: cert}
	s.stop = func() { cancel(); <-done; r.Close() }
	b.Cleanup(s.stop)
	return s
}

// commitTotals are the server's group-commit counters, as scraped.
type commitTotals struct{ commits, writes, seconds float64 }

// commits scrapes the server's qpq_relay_store_commit* counters.
func (s *server) commits(b *testing.B) commitTotals {
	b.Helper()
	mfs, err := s.relay.Registry().Gather()
	if err != nil {
		b.Fatal(err)
	}
	var t commitTotals
	for _, mf := range mfs {
		v := 0.0
		if m := mf.GetMetric(); len(m) == 1 && m[0].GetCounter() != nil {
			v = m[0].GetCounter().GetValue()
		}
		switch mf.GetName() {
		case "qpq_relay_store_commits_total":
			t.commits = v
		case "qpq_relay_store_commit_writes_total":
			t.writes = v
		case "qpq_relay_store_commit_seconds_total":
			t.seconds = v
		}
	}
	return t
}

func (t commitTotals) since(t0 commitTotals) commitTotals {
	return commitTotals{t.commits - t0.commits, t.writes - t0.writes, t.seconds - t0.seconds}
}

// report adds the mean group commit of a run: how many writes shared one,
// and how long one took. Every acknowledged enqueue waits for at least
// one, so the commit time bounds a client's rate one message at a time.
func (t commitTotals) report(b *testing.B) {
	if t.commits == 0 {
		return
	}
	b.ReportMetric(t.writes/t.commits, "writes/commit")
	b.ReportMetric(t.seconds/t.commits*1e6, "µs/commit")
}

// client is a logged-in user on its own connection.
type client struct {
	conn *rpc.Conn
	c    *rpc.Client
	id   []byte
}

// login registers a user and logs in with OPAQUE (the real flow).
func login(b *testing.B, addr string, fp rpc.Fingerprint, name string) *client {
	b.Helper()
	ctx := context.Background()
	conn, err := rpc.Dial(ctx, addr, rpc.DialOptions{Pin: fp})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	id, _, _ := ed25519.GenerateKey(rand.Reader)
	if err := conn.Client().Register(ctx, name, []byte("pw"), id); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Client().Login(ctx, name, []byte("pw"), id); err != nil {
		b.Fatal(err)
	}
	return &client{conn: conn, c: conn.Client(), id: id}
}

// split runs total operations over n workers and returns the elapsed time.
func split(n, total int, work func(worker, count int) error) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for w := range n {
		count := total / n
		if w < total%n {
			count++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := work(w, count); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	return elapsed, <-errs
}

// echoServer is the baseline: a bare quic-go server that echoes each
// stream back, with the same certificate and ALPN.
func echoServer(b *testing.B, cert tls.Certificate) string {
	b.Helper()
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{rpc.ALPN}, MinVersion: tls.VersionTLS13}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := conn.AcceptStream(ctx)
				if err != nil {
					return
				}
				io.Copy(st, st)
				st.Close()
			}()
		}
	}()
	b.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// echoClients are n clients of an echo server, each with its own
// connection and stream, as each client of the home server has.
type echoClients []*quic.Stream

func dialEcho(b *testing.B, cert tls.Certificate, n int) echoClients {
	b.Helper()
	addr := echoServer(b, cert)
	ctx := context.Background()
	streams := make(echoClients, n)
	for i := range streams {
		conn, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{rpc.ALPN}}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.CloseWithError(0, "") })
		if streams[i], err = conn.OpenStreamSync(ctx); err != nil {
			b.Fatal(err)
		}
	}
	return streams
}

// run echoes total 1 KiB messages spread over the clients, each writing
// depth messages before reading them back (1: one at a time; more: the
// baseline of clients that keep several in flight).
func (e echoClients) run(total, depth int) error {
	_, err := split(len(e), total/depth, func(w, rounds int) error {
		msg, back := make([]byte, payloadSize), make([]byte, depth*payloadSize)
		for range rounds {
			for range depth {
				if _, err := e[w].Write(msg); err != nil {
					return err
				}
			}
			if _, err := io.ReadFull(e[w], back); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}

// udpPackets returns the UDP datagrams this machine has received so far
// (/proc/net/snmp InDatagrams, 0 if unreadable). On loopback every packet
// a run sends is received, so the difference over a run is its packets,
// both directions together: each costs a sendmsg (with the receiver's
// wake-up) and a receive, whoever sends it.
func udpPackets() float64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "InDatagrams" && i < len(f) {
				v, _ := strconv.ParseFloat(f[i], 64)
				return v
			}
		}
	}
	return 0
}

// side adds up what one side of a comparison took over its segments:
// wall time, CPU time (client and server together, as both run here),
// UDP packets, messages.
type side struct {
	elapsed, cpu time.Duration
	packets      float64
	msgs         int
}

func (s *side) run(count int, f func(count int) error) error {
	cpu0, pkts0, t0 := cpuTime(), udpPackets(), time.Now()
	err := f(count)
	s.elapsed += time.Since(t0)
	s.cpu += cpuTime() - cpu0
	s.packets += udpPackets() - pkts0
	s.msgs += count
	return err
}

func (s side) rate() float64 { return float64(s.msgs) / s.elapsed.Seconds() }

// segments is how many parts compare cuts each side's messages into.
const segments = 8

// compare sends total messages through the home server (serve) and as
// many through the bare echo (echo), alternating segments of each: the
// VM's speed drifts over seconds, so a baseline measured before the run
// would compare two different machines. Segments are multiples of unit
// messages (a round of every client). It reports both sides' rate, CPU
// time and packets per message, the ratio, and the server's mean group
// commit; the benchmark's timer counts the server's segments only.
func compare(b *testing.B, s *server, total, unit int, echo, serve func(count int) error) {
	b.Helper()
	total = max(total/unit, 1) * unit
	seg := max(total/segments/unit, 1) * unit
	var srv, base side
	commits0 := s.commits(b)
	b.ResetTimer()
	for done := 0; done < total; done += seg {
		count := min(seg, total-done)
		b.StopTimer()
		if err := base.run(count, echo); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := srv.run(count, serve); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(srv.rate(), "msgs/s")
	b.ReportMetric(base.rate(), "echo-msgs/s")
	b.ReportMetric(srv.rate()/base.rate(), "ratio")
	for _, m := range []struct {
		s    side
		name string
	}{{srv, ""}, {base, "echo-"}} {
		b.ReportMetric(float64((m.s.cpu / time.Duration(m.s.msgs)).Microseconds()), m.name+"cpu-µs/msg")
		b.ReportMetric(m.s.packets/float64(m.s.msgs), m.name+"pkts/msg")
	}
	s.commits(b).since(commits0).report(b)
}

// BenchmarkEnqueueFetch: each client enqueues a 1 KiB payload to its own
// inbox (durable) and fetches it (durable drain), over and over. One op is
// one message through the server, beside the bare echo of as many
// messages, one at a time per client, in the same run.
func BenchmarkEnqueueFetch(b *testing.B) {
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			s := startServer(b)
			clients := make([]*client, n)
			for i := range clients {
				clients[i] = login(b, s.addr, s.fp, fmt.Sprint("bench", i))
			}
			echo := dialEcho(b, s.cert, n)
			compare(b, s, b.N, n, func(count int) error { return echo.run(count, 1) }, func(count int) error {
				_, err := split(n, count, func(w, count int) error {
					c := clients[w]
					payload := make([]byte, payloadSize)
					for range count {
						if _, err := c.c.Enqueue(context.Background(), c.id, nil, payload); err != nil {
							return err
						}
						envs, err := c.c.Fetch(context.Background(), c.id, nil, 0)
						if err != nil {
							return err
						}
						if len(envs) != 1 || len(envs[0].Data) != payloadSize {
							return fmt.Errorf("fetched %d messages", len(envs))
						}
					}
					return nil
				})
				return err
			})
		})
	}
}

// BenchmarkHealth is the floor of any call: NodeService.health (no
// storage, no auth) in a loop per client, beside the same echo. Its
// "msgs/s" are calls.
func BenchmarkHealth(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			s := startServer(b)
			conns := make([]*rpc.Conn, n)
			for i := range conns {
				c, err := rpc.Dial(context.Background(), s.addr, rpc.DialOptions{Pin: s.fp})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				conns[i] = c
			}
			echo := dialEcho(b, s.cert, n)
			compare(b, s, b.N, n, func(count int) error { return echo.run(count, 1) }, func(count int) error {
				_, err := split(n, count, func(w, count int) error {
					for range count {
						if _, err := conns[w].Client().Health(context.Background()); err != nil {
							return err
						}
					}
					return nil
				})
				return err
			})
		})
	}
}

// BenchmarkEnqueueDrain is the same traffic with fetches that drain what
// has gathered: each client enqueues 16 messages (each acknowledged, so
// each durable on its own), then fetches until it has the 16 back. This is
// how a node catches up with its inbox; one op is still one message.
func BenchmarkEnqueueDrain(b *testing.B) { enqueueRounds(b, []int{4, 16}, false) }

// BenchmarkEnqueuePipelined is EnqueueDrain with the 16 enqueues of a
// round sent at once on the client's connection (as a node flushing its
// outbox does): each is still acknowledged only once on disk, but the
// server can commit them together.
func BenchmarkEnqueuePipelined(b *testing.B) { enqueueRounds(b, []int{1, 4, 16}, true) }

// enqueueRounds runs rounds of 16 enqueues (one after another, or all at
// once) followed by fetches until the 16 are back, for each client count.
// The echo has the same shape: one message at a time, or the 16 of a
// round in flight at once.
func enqueueRounds(b *testing.B, clientCounts []int, pipelined bool) {
	const gather = 16
	depth := 1
	if pipelined {
		depth = gather
	}
	for _, n := range clientCounts {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			s := startServer(b)
			clients := make([]*client, n)
			for i := range clients {
				clients[i] = login(b, s.addr, s.fp, fmt.Sprint("bench", i))
			}
			echo := dialEcho(b, s.cert, n)
			compare(b, s, b.N, n*gather, func(count int) error { return echo.run(count, depth) }, func(count int) error {
				_, err := split(n, count/gather, func(w, rounds int) error {
					c := clients[w]
					payload := make([]byte, payloadSize)
					enqueue := func() error {
						_, err := c.c.Enqueue(context.Background(), c.id, nil, payload)
						return err
					}
					errs := make(chan error, gather)
					for range rounds {
						for range gather {
							if pipelined {
								go func() { errs <- enqueue() }()
							} else {
								errs <- enqueue()
							}
						}
						for range gather {
							if err := <-errs; err != nil {
								return err
							}
						}
						for got := 0; got < gather; {
							envs, err := c.c.Fetch(context.Background(), c.id, nil, 0)
							if err != nil {
								return err
							}
							got += len(envs)
						}
					}
					return nil
				})
				return err
			})
		})
	}
}

// BenchmarkFetchWaitWake measures, per op, the time from a sender starting
// an enqueue to a waiting fetchWait on another connection returning the
// message: delivery latency, including both durable commits.
func BenchmarkFetchWaitWake(b *testing.B) {
	s := startServer(b)
	sender := login(b, s.addr, s.fp, "sender")
	waiter := login(b, s.addr, s.fp, "waiter")
	payload := make([]byte, payloadSize)
	lat := make([]time.Duration, 0, b.N)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		got := make(chan time.Time, 1)
		go func() {
			envs, err := waiter.c.FetchWait(ctx, waiter.id, nil, time.Minute, 0)
			if err != nil || len(envs) != 1 {
				b.Errorf("fetchWait: %d messages, %v", len(envs), err)
			}
			got <- time.Now()
		}()
		for s.relay.Store().Waiting() == 0 {
			time.Sleep(50 * time.Microsecond)
		}
		b.StartTimer()
		t0 := time.Now()
		if _, err := sender.c.Enqueue(ctx, waiter.id, nil, payload); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, (<-got).Sub(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkIdleClients starts `qpq serve` as its own process, connects
// QPQ_BENCH_CLIENTS clients (default 5000) that each hold a fetchWait, and
// reports the server's resident memory. Run it with -benchtime=1x.
func BenchmarkIdleClients(b *testing.B) {
	n := 5000
	if v := os.Getenv("QPQ_BENCH_CLIENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	bin := filepath.Join(b.TempDir(), "qpq")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/quicproquo/qpq/cmd/qpq").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	data := b.TempDir()
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data", data, "--rate-limit=off", "--log-level=warn", "--metrics", "127.0.0.1:0", "--p2p=false", "--mdns=false")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var addr, metrics string
	var fp rpc.Fingerprint
	sc := bufio.NewScanner(stdout)
	for fp.IsZero() && sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "metrics":
			metrics = f[2]
		case len(f) >= 3 && f[0] == "listening":
			addr = f[2]
		case len(f) == 2 && f[0] == "fingerprint":
			fp, _ = rpc.ParseFingerprint(f[1])
		}
	}
	go io.Copy(io.Discard, stdout)
	baseline := rss(b, cmd.Process.Pid)

	owner := login(b, addr, fp, "idle")
	token := owner.c.Token()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp} // one socket for every client
	defer func() { tr.Close(); udp.Close() }()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns := make([]*rpc.Conn, n)
	started := time.Now()
	var dialWG, waitWG sync.WaitGroup
	// quic-go queues at most 32 finished handshakes for Accept and refuses
	// the rest; dial in waves below that, and dial again when refused.
	sem := make(chan struct{}, 16)
	for i := range conns {
		dialWG.Add(1)
		sem <- struct{}{}
		go func() {
			defer dialWG.Done()
			defer func() { <-sem }()
			for attempt := 0; ; attempt++ {
				c, err := rpc.Dial(ctx, addr, rpc.DialOptions{Pin: fp, Transport: tr})
				if err == nil {
					c.Client().SetToken(token)
					if _, err = c.Client().Health(ctx); err == nil {
						conns[i] = c
						break
					}
					c.Close()
				}
				if attempt == 5 {
					b.Errorf("client %d: %v", i, err)
					return
				}
			}
			waitWG.Add(1)
			go func() {
				defer waitWG.Done()
				for ctx.Err() == nil { // the server caps a wait at 60 s
					conns[i].Client().FetchWait(ctx, owner.id, nil, time.Minute, 0)
				}
			}()
		}()
	}
	dialWG.Wait()
	if b.Failed() {
		b.FailNow()
	}
	// Every client's fetchWait is held once a health call on each
	// connection has answered (calls on a connection run in order).
	for _, c := range conns {
		if _, err := c.Client().Health(ctx); err != nil {
			b.Fatalf("%v (connection: %v)", err, c.Err())
		}
	}
	connected := time.Since(started)
	held := rss(b, cmd.Process.Pid)
	waiting := scrape(b, metrics, "qpq_relay_fetch_waiters")
	if waiting != float64(n) {
		b.Errorf("%v fetchWaits held by the server, want %d", waiting, n)
	}
	b.ReportMetric(float64(n), "clients")
	b.ReportMetric(float64(held)/(1<<20), "rss-MiB")
	b.ReportMetric(float64(held-baseline)/float64(n)/1024, "KiB/client")
	b.ReportMetric(connected.Seconds(), "connect-s")
	cancel()
	for _, c := range conns {
		c.Close()
	}
	waitWG.Wait()
}

// scrape reads one unlabelled metric from a Prometheus endpoint.
func scrape(b *testing.B, url, name string) float64 {
	b.Helper()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	b.Fatalf("metric %s not served", name)
	return 0
}

// rss returns a process's resident set size in bytes.
func rss(b *testing.B, pid int) int64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
