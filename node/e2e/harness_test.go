package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quicproquo/qpq/internal/lan"
	"github.com/quicproquo/qpq/internal/lan/lantest"
)

// waitLimit bounds each wait for an event that must come; reaching it is
// a failure, never a measurement.
const waitLimit = 45 * time.Second

// qpqBin is the qpq binary the tests run, built once by TestMain (with the
// race detector when the tests have it).
var qpqBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if lan.Available() == nil {
		dir, err := os.MkdirTemp("", "qpq-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		qpqBin = filepath.Join(dir, "qpq")
		args := []string{"build", "-o", qpqBin}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/qpq")...)
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building qpq: %v\n%s", err, out)
			return 1
		}
	}
	return m.Run()
}

// event is any `qpq chat --json` line (docs/CLI.md); fields absent from
// a type stay zero.
type event struct {
	Type         string   `json:"type"`
	User         string   `json:"user"`
	Identity     string   `json:"identity"`
	Link         string   `json:"link"`
	Name         string   `json:"name"`
	Members      []string `json:"members"`
	Epoch        uint64   `json:"epoch"`
	Kind         string   `json:"kind"`
	Status       string   `json:"status"`
	ID           string   `json:"id"`
	Conversation string   `json:"conversation"`
	From         string   `json:"from"`
	Text         string   `json:"text"`
	Via          string   `json:"via"`
	To           string   `json:"to"`
	Code         string   `json:"code"`
	Message      string   `json:"message"`
	Command      string   `json:"command"` // done, error
	Server       string   `json:"server"`
	Fingerprint  string   `json:"fingerprint"`
	First        bool     `json:"first"`
	State        string   `json:"state"`

	at time.Time // when the test read it
}

func (e event) String() string {
	b, _ := json.Marshal(e)
	return string(b)
}

// chat is one `qpq chat --json` process in a LAN node's namespace,
// driven through its stdin and read from its stdout.
type chat struct {
	t    testing.TB
	l    *lan.LAN
	node int
	user string
	data string
	args []string
	env  []string

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *os.File
	readWG sync.WaitGroup

	mu     sync.Mutex // guards the fields below
	events []event    // not yet taken by a wait
	all    []event    // every event of every run, in order
	evCh   chan struct{}
	exited bool
}

// startChat starts qpq chat for user in node's namespace, with extra
// flags. With server it logs in there (password from QPQ_PASSWORD).
func startChat(t testing.TB, l *lan.LAN, node int, user, server string, extra ...string) *chat {
	t.Helper()
	c := &chat{t: t, l: l, node: node, user: user, data: filepath.Join(t.TempDir(), user)}
	level := logLevel()
	if _, bench := t.(*testing.B); bench {
		level = "error"
	}
	c.args = []string{"chat", "--json", "--data", c.data, "--user", user, "--mdns-iface", lan.Iface, "--log-level", level}
	if server != "" {
		c.args = append(c.args, "--server", server)
		c.env = append(c.env, "QPQ_PASSWORD=password of "+user)
	}
	c.args = append(c.args, extra...)
	c.start()
	t.Cleanup(c.stop)
	return c
}

func (c *chat) start() {
	t := c.t
	t.Helper()
	cmd, err := c.l.Command(context.Background(), c.node, qpqBin, c.args...)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), c.env...)
	lantest.DieWithParent(cmd)
	if c.stderr, err = os.CreateTemp(t.TempDir(), c.user+"-stderr-"); err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.cmd, c.exited, c.events, c.evCh = cmd, false, nil, make(chan struct{})
	c.mu.Unlock()
	c.readWG.Add(1)
	go c.read(stdout)
}

func (c *chat) read(r io.Reader) {
	defer c.readWG.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			c.t.Errorf("%s wrote a line that is not JSON: %q", c.user, sc.Text())
			continue
		}
		ev.at = time.Now()
		c.mu.Lock()
		c.events = append(c.events, ev)
		c.all = append(c.all, ev)
		close(c.evCh)
		c.evCh = make(chan struct{})
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.exited = true
	close(c.evCh)
	c.evCh = make(chan struct{})
	c.mu.Unlock()
}

// do writes one command line.
func (c *chat) do(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatalf("%s: writing %q: %v", c.user, line, err)
	}
}

// cmd writes a command and waits for its done (or fails on its error).
func (c *chat) command(line string) event {
	c.t.Helper()
	c.do(line)
	ev := c.wait("answer to "+line, func(e event) bool {
		return e.Type == "done" || e.Type == "error" && e.Command != ""
	})
	if ev.Type == "error" {
		c.t.Fatalf("%s: %s: %s: %s", c.user, line, ev.Code, ev.Message)
	}
	return ev
}

// say sends a text to the current conversation and returns its id.
func (c *chat) say(text string) string {
	c.t.Helper()
	ev := c.command(text)
	if ev.Command != "send" || len(ev.ID) != 32 {
		c.t.Fatalf("%s: sending %q answered %v", c.user, text, ev)
	}
	return ev.ID
}

// wait returns (and takes) the first event match accepts, waiting up to
// waitLimit.
func (c *chat) wait(what string, match func(event) bool) event {
	c.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		for i, ev := range c.events {
			if match(ev) {
				c.events = append(c.events[:i:i], c.events[i+1:]...)
				c.mu.Unlock()
				return ev
			}
		}
		ch, exited := c.evCh, c.exited
		c.mu.Unlock()
		if exited {
			c.t.Fatalf("%s exited while waiting for %s", c.user, what)
		}
		select {
		case <-ch:
		case <-deadline.C:
			c.t.Fatalf("%s: no %s within %v", c.user, what, waitLimit)
		}
	}
}

func (c *chat) ready() event {
	c.t.Helper()
	return c.wait("ready", func(e event) bool { return e.Type == "ready" })
}

// sees waits until c is linked directly to user.
func (c *chat) sees(user string) {
	c.t.Helper()
	c.wait("direct link to "+user, func(e event) bool { return e.Type == "peer" && e.User == user && e.Link == "direct" })
}

// conv waits for a conversation event of name that check accepts.
func (c *chat) conv(name string, check func(event) bool) event {
	c.t.Helper()
	return c.wait("conversation "+name, func(e event) bool {
		return e.Type == "conversation" && e.Name == name && (check == nil || check(e))
	})
}

func members(n int) func(event) bool {
	return func(e event) bool { return e.Status == "active" && len(e.Members) == n }
}

// got waits for the message text in conversation conv.
func (c *chat) got(conv, text string) event {
	c.t.Helper()
	return c.wait(fmt.Sprintf("message %q in %s", text, conv), func(e event) bool {
		return e.Type == "message" && e.Conversation == conv && e.Text == text
	})
}

// gotVia waits for each of texts in conv, in any order, and fails on one
// that arrived by another path than via.
func (c *chat) gotVia(conv, via string, texts []string) {
	c.t.Helper()
	for _, text := range texts {
		if m := c.got(conv, text); m.Via != via {
			c.t.Errorf("%s got %q via %s, want %s", c.user, text, m.Via, via)
		}
	}
}

// list runs /list and returns the conversations it shows.
func (c *chat) list() []event {
	c.t.Helper()
	c.forget("conversation") // /list's come after
	c.do("/list")
	var out []event
	for {
		e := c.wait("/list", func(e event) bool { return e.Type == "conversation" || e.Command == "list" })
		switch e.Type {
		case "done":
			return out
		case "error":
			c.t.Fatalf("%s: /list: %v", c.user, e)
		}
		out = append(out, e)
	}
}

// forget drops the queued events of one type, so that a wait sees only
// later ones.
func (c *chat) forget(typ string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := c.events[:0]
	for _, e := range c.events {
		if e.Type != typ {
			kept = append(kept, e)
		}
	}
	c.events = kept
}

// drop forgets the events read so far (benchmarks: keep memory flat).
func (c *chat) drop() {
	c.mu.Lock()
	c.events, c.all = nil, nil
	c.mu.Unlock()
}

// messages returns every message event c printed (all runs).
func (c *chat) messages() []event { return c.printed("message") }

// errors returns every error event c printed (all runs).
func (c *chat) errors() []event { return c.printed("error") }

func (c *chat) printed(typ string) []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []event
	for _, e := range c.all {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// stop closes stdin (qpq chat then exits by itself), waits a bounded time,
// kills it if need be, and reports a bad exit (a race report's, say).
func (c *chat) stop() {
	c.mu.Lock()
	if c.cmd == nil {
		c.mu.Unlock()
		return
	}
	cmd := c.cmd
	c.cmd = nil
	c.mu.Unlock()
	c.stdin.Close()
	done := make(chan error, 1)
	go func() { c.readWG.Wait(); done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		err = fmt.Errorf("did not exit within 20 s of stdin closing (killed): %v", <-done)
	}
	if err != nil {
		c.t.Errorf("%s: %v", c.user, err)
	}
	c.dumpStderr()
}

// kill ends the process with SIGKILL, as a crash would.
func (c *chat) kill() {
	c.mu.Lock()
	cmd := c.cmd
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	c.readWG.Wait()
	cmd.Wait()
	c.dumpStderr()
}

func (c *chat) dumpStderr() {
	if c.stderr == nil {
		return
	}
	name := c.stderr.Name()
	c.stderr.Close()
	c.stderr = nil
	if c.t.Failed() || os.Getenv("QPQ_E2E_VERBOSE") != "" {
		b, _ := os.ReadFile(name)
		if bytes.Count(b, []byte("\n")) > 300 {
			lines := strings.Split(string(b), "\n")
			b = []byte(strings.Join(lines[len(lines)-300:], "\n"))
		}
		c.t.Logf("%s stderr:\n%s", c.user, b)
	}
}

// server runs `qpq serve` in node's namespace, listening on its address,
// for the rest of the test.
func server(t testing.TB, l *lan.LAN, node int) string {
	t.Helper()
	return startServer(t, l, node, filepath.Join(t.TempDir(), "server")).addr
}

// serve is one `qpq serve` process, which a test may stop and start again
// on the same data.
type serve struct {
	t    testing.TB
	l    *lan.LAN
	node int
	addr string
	args []string

	cmd    *exec.Cmd
	stderr bytes.Buffer // of the current run; read after it ended
	log    strings.Builder
}

// startServer runs `qpq serve` in node's namespace on data, listening on
// the node's address, with extra flags (--domain, --config, …); it is
// stopped at the end of the test.
func startServer(t testing.TB, l *lan.LAN, node int, data string, extra ...string) *serve {
	t.Helper()
	s := &serve{t: t, l: l, node: node, addr: fmt.Sprintf("%s:7443", l.Nodes[node].Addr)}
	s.args = append([]string{"serve", "--listen", s.addr, "--data", data, "--rate-limit=off", "--log-level", "warn"}, extra...)
	s.start()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("server %s stderr:\n%s", s.addr, s.log.String())
		}
	})
	return s
}

// start starts the process and waits until it serves.
func (s *serve) start() {
	t := s.t
	t.Helper()
	cmd, err := s.l.Command(context.Background(), s.node, qpqBin, s.args...)
	if err != nil {
		t.Fatal(err)
	}
	lantest.DieWithParent(cmd)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.stderr.Reset()
	cmd.Stderr = &s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd = cmd
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "fingerprint ") {
			go io.Copy(io.Discard, out)
			return
		}
	}
	s.stop()
	t.Fatalf("qpq serve did not start: %s", s.log.String())
}

// kill ends the process with SIGKILL, as a crash would: the server closes
// no connection, so its clients learn of it only from the next run.
func (s *serve) kill() {
	cmd := s.cmd
	if cmd == nil {
		return
	}
	s.cmd = nil
	cmd.Process.Kill()
	cmd.Wait()
	s.log.Write(s.stderr.Bytes())
}

// stop ends the process with SIGTERM (SIGKILL after 10 s); stopping a
// stopped server does nothing.
func (s *serve) stop() {
	cmd := s.cmd
	if cmd == nil {
		return
	}
	s.cmd = nil
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	s.log.Write(s.stderr.Bytes())
}

// newLAN builds a LAN of n namespaces for one test, and checks at the end
// that the test leaked no goroutines.
func newLAN(t *testing.T, n int) *lan.LAN {
	lantest.VerifyNoLeaks(t)
	return lantest.New(t, n)
}

// checkOnce fails if an id was shown twice among c's messages.
func checkOnce(t *testing.T, c *chat) {
	t.Helper()
	seen := map[string]bool{}
	for _, m := range c.messages() {
		if seen[m.ID] {
			t.Errorf("%s was shown message %s (%q) twice", c.user, m.ID, m.Text)
		}
		seen[m.ID] = true
	}
}

// inOrder fails unless c received want (texts from one sender in one
// conversation) exactly in this order, each once.
func inOrder(t *testing.T, c *chat, conv, from string, want []string) {
	t.Helper()
	var got []string
	for _, m := range c.messages() {
		if m.Conversation == conv && m.From == from {
			got = append(got, m.Text)
		}
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("%s got from %s in %s:\n%q\nwant\n%q", c.user, from, conv, got, want)
	}
}

// noErrors fails on error events other than the allowed codes.
func noErrors(t *testing.T, cs ...*chat) {
	t.Helper()
	for _, c := range cs {
		for _, e := range c.errors() {
			t.Errorf("%s reported an error: %s: %s", c.user, e.Code, e.Message)
		}
	}
}

// logLevel is qpq chat's --log-level: QPQ_E2E_LOG, or info.
func logLevel() string {
	if l := os.Getenv("QPQ_E2E_LOG"); l != "" {
		return l
	}
	return "info"
}
