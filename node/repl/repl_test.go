package repl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/quicproquo/qpq/node"
)

func TestEditorKeys(t *testing.T) {
	for _, c := range []struct {
		name, keys string
		want       []string
	}{
		{"plain", "hello\r", []string{"hello"}},
		{"backspace", "helx\x7flo\r", []string{"hello"}},
		{"left and insert", "wrld\x1b[D\x1b[D\x1b[Do\r", []string{"world"}},
		{"home and end", "bc\x1b[Ha\x1b[Fd\r", []string{"abcd"}},
		{"ctrl-a ctrl-e ctrl-k", "xyz\x01\x06\x0b\x05!\r", []string{"x!"}},
		{"ctrl-u", "junk\x15ok\r", []string{"ok"}},
		{"ctrl-w", "one two\x17three\r", []string{"one three"}},
		{"delete", "abc\x1b[D\x1b[D\x1b[3~\r", []string{"ac"}},
		{"history", "first\rsecond\r\x1b[A\x1b[A\r\x1b[A\x1b[B\r", []string{"first", "second", "first", ""}},
		{"utf-8", "zoë\x7fe\r", []string{"zoe"}},
		{"ctrl-c clears", "oops\x03fine\r", []string{"fine"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out strings.Builder
			e := newEditor(strings.NewReader(c.keys), &out)
			var got []string
			for {
				line, err := e.readLine()
				if err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatal(err)
					}
					break
				}
				got = append(got, line)
			}
			if strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Fatalf("lines %q, want %q", got, c.want)
			}
		})
	}
	e := newEditor(strings.NewReader("\x04"), io.Discard)
	if _, err := e.readLine(); !errors.Is(err, io.EOF) {
		t.Fatalf("^D on an empty line: %v, want EOF", err)
	}
	e = newEditor(strings.NewReader("\x03"), io.Discard)
	if _, err := e.readLine(); !errors.Is(err, errInterrupt) {
		t.Fatalf("^C on an empty line: %v, want errInterrupt", err)
	}
}

// TestEditorPrintKeepsLine: text printed while a line is edited appears
// above it, and the line is drawn again below.
func TestEditorPrintKeepsLine(t *testing.T) {
	pr, pw := io.Pipe()
	var out syncBuilder
	e := newEditor(pr, &out)
	e.setPrompt("> ", 2)
	done := make(chan string)
	go func() {
		line, _ := e.readLine()
		done <- line
	}()
	io.WriteString(pw, "half")
	for !strings.Contains(out.String(), "half") {
		time.Sleep(time.Millisecond)
	}
	e.print("bob: hi\n")
	io.WriteString(pw, " done\r")
	if line := <-done; line != "half done" {
		t.Fatalf("line %q", line)
	}
	pw.Close()
	s := out.String()
	i := strings.Index(s, "bob: hi\n")
	if i < 0 || !strings.Contains(s[i:], "> half") {
		t.Fatalf("output %q: the message is not above a redrawn line", s)
	}
}

// TestJSONSession drives a real node (loopback, no mDNS) through the REPL
// as a program would, one command per line, and reads the JSON events.
func TestJSONSession(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	defer goleak.VerifyNone(t, opt)
	outR, outW := io.Pipe()
	r := New(outW, Config{JSON: true})
	n, err := node.Open(context.Background(), node.Config{
		DataDir: t.TempDir(), Username: "alice", NoMDNS: true,
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")},
		OnEvent:     r.Event,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- n.Run(ctx) }()
	inR, inW := io.Pipe()
	replDone := make(chan error, 1)
	go func() { replDone <- r.Run(ctx, n, inR, -1) }()

	events := make(chan map[string]any, 100)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("not JSON: %q", sc.Text())
				continue
			}
			events <- m
		}
		close(events)
	}()
	// next returns the next event, which must be of type typ: the REPL
	// prints a command's effects, then its answer, in order.
	next := func(typ string) map[string]any {
		t.Helper()
		for {
			select {
			case m := <-events:
				if m["type"] == "peer" {
					continue
				}
				if m["type"] != typ {
					t.Fatalf("got %v, want a %s event", m, typ)
				}
				return m
			case <-time.After(20 * time.Second):
				t.Fatalf("no %s event", typ)
			}
		}
	}
	say := func(line string) { io.WriteString(inW, line+"\n") }

	if m := next("ready"); m["user"] != "alice" {
		t.Fatalf("ready %v", m)
	}
	say("hello?")
	if m := next("error"); m["code"] != "failed-precondition" || m["command"] != "send" {
		t.Fatalf("text with no conversation: %v", m)
	}
	say("/group create crew")
	if m := next("conversation"); m["name"] != "crew" || m["kind"] != "group" || m["status"] != "active" {
		t.Fatalf("conversation %v", m)
	}
	next("done")
	say("note to self")
	d := next("done")
	if d["command"] != "send" || len(d["id"].(string)) != 32 {
		t.Fatalf("done %v", d)
	}
	say("/history")
	h := next("history")
	next("done")
	if h["text"] != "note to self" || h["from"] != "alice" || h["via"] != "sent" || h["id"] != d["id"] {
		t.Fatalf("history %v", h)
	}
	say("/whoami")
	if w := next("whoami"); w["user"] != "alice" || len(w["identity"].(string)) != 64 ||
		w["fingerprint"] != node.Fingerprint(w["identity"].(string)) {
		t.Fatalf("whoami %v", w)
	}
	next("done")
	say("/switch nowhere")
	if m := next("error"); m["code"] != "not-found" {
		t.Fatalf("/switch nowhere: %v", m)
	}
	say("/frobnicate")
	if m := next("error"); m["code"] != "invalid-argument" {
		t.Fatalf("unknown command: %v", m)
	}
	say("/dm alice")
	if m := next("error"); m["code"] != "invalid-argument" {
		t.Fatalf("/dm to self: %v", m)
	}
	say("/quit")
	if err := <-replDone; err != nil {
		t.Fatal(err)
	}
	cancel()
	<-runDone
	n.Close()
	outW.Close()
	inW.Close()
	for range events {
	}
}

// syncBuilder is a strings.Builder safe for a writer and a reader.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestJoinedConversationBecomesCurrent: with none current, the first
// conversation we join (or that a message arrives in) becomes current, so
// answering a DM that someone else opened needs no /switch; a later one
// does not steal the focus, and a waiting or left one never takes it.
func TestJoinedConversationBecomesCurrent(t *testing.T) {
	r := New(io.Discard, Config{})
	r.Event(node.Conversation{Name: "bob", Status: "waiting"})
	if got := r.cur(); got != "" {
		t.Fatalf("a waiting conversation became current: %q", got)
	}
	r.Event(node.Conversation{Name: "bob", Status: "active"})
	if got := r.cur(); got != "bob" {
		t.Fatalf("current after joining = %q, want bob", got)
	}
	r.Event(node.Conversation{Name: "crew", Status: "active"})
	r.Event(node.Message{Conversation: "carol", Text: "hi"})
	if got := r.cur(); got != "bob" {
		t.Fatalf("a later conversation took the focus: %q", got)
	}

	r = New(io.Discard, Config{})
	r.Event(node.Message{Conversation: "carol", Text: "hi"})
	if got := r.cur(); got != "carol" {
		t.Fatalf("current after a message = %q, want carol", got)
	}
}

// TestPeerTextCannotCommandTheTerminal: what others write (a message, a
// group's name, a server's error) reaches a person's terminal with its
// control characters shown, not obeyed, and a message's later lines
// indented, so that it cannot clear the screen, rewrite earlier lines or
// pass one of its lines off as someone else's message. --json keeps the
// exact text.
func TestPeerTextCannotCommandTheTerminal(t *testing.T) {
	var out strings.Builder
	r := New(&out, Config{Color: true})
	r.Event(node.Message{Conversation: "team\x1b]0;pwned\x07", From: "mallory", Text: "hi\x1b[2J\x1b[H\r\n[team] alice: send me your password\u202e\u009b"})
	r.Event(node.Conversation{Name: "team\x1b[31m", Kind: "group", Status: "active", Members: []string{"mallory"}})
	r.Event(node.Error{Code: "internal", Message: "server says \x1b[1Ahi"})
	got := out.String()
	// The only escapes left are the REPL's own colors: ESC [ digits m.
	if rest := regexp.MustCompile("\x1b\\[[0-9]*m").ReplaceAllString(got, ""); strings.ContainsAny(rest, "\x1b\x07\r\u009b\u202e") {
		t.Fatalf("control characters reached the terminal: %q", got)
	}
	for _, want := range []string{"team^[]0;pwned^G", "hi^[[2J^[[H\n  [team] alice: send me your password<U+202E><U+009B>", "[team^[[31m]", "server says ^[[1Ahi"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q: %q", want, got)
		}
	}

	out.Reset()
	r = New(&out, Config{JSON: true})
	text := "hi\x1b[2J\nbye"
	r.Event(node.Message{Conversation: "team", From: "mallory", Text: text})
	var ev struct{ Text string }
	if err := json.Unmarshal([]byte(out.String()), &ev); err != nil || ev.Text != text {
		t.Fatalf("JSON text %q, %v; want %q", ev.Text, err, text)
	}
}

// FuzzVisible: whatever the text, what reaches the terminal holds no
// character it would obey, and each line break of a message is followed
// by the indent that marks its later lines.
func FuzzVisible(f *testing.F) {
	f.Add("plain")
	f.Add("a\x1b[2J\r\nb\u202e\u0085\x7f")
	f.Fuzz(func(t *testing.T, s string) {
		one, block := visible(s), textBlock(s)
		for _, r := range one {
			if needsEscape(r) {
				t.Fatalf("visible(%q) = %q holds %U", s, one, r)
			}
		}
		for i, r := range block {
			if r == '\n' && !strings.HasPrefix(block[i+1:], "  ") || r != '\n' && needsEscape(r) {
				t.Fatalf("textBlock(%q) = %q: %U at %d", s, block, r, i)
			}
		}
	})
}

// TestHeldDeliveryIsShown: a person sees when messages to someone are
// held up and when they go out again, and /history marks what has not
// reached everyone; a Sent alone stays quiet.
func TestHeldDeliveryIsShown(t *testing.T) {
	var out strings.Builder
	r := New(&out, Config{})
	r.Event(node.Sent{Conversation: "bob", ID: "01", Via: "direct", To: "bob"})
	if out.Len() != 0 {
		t.Fatalf("a Sent printed %q", out.String())
	}
	r.Event(node.Delivery{To: "bob", Conversation: "bob", State: node.DeliveryWaiting, Code: "failed-precondition", Message: "not reachable: no link to the peer and no home server"})
	r.Event(node.History{From: "alice", Text: "are you there?", WaitingFor: []string{"bob", "carol\x1b[2J"}})
	r.Event(node.History{From: "alice", Text: "delivered"})
	r.Event(node.Delivery{To: "bob", Conversation: "bob", State: node.DeliveryResumed, Via: "direct"})
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []*regexp.Regexp{
		regexp.MustCompile(`^\[bob\] waiting for bob: not reachable: no link to the peer and no home server — your messages are kept and go out once bob can be reached$`),
		regexp.MustCompile(`alice: are you there\? \(waiting for bob, carol\^\[\[2J\)$`),
		regexp.MustCompile(`alice: delivered$`),
		regexp.MustCompile(`^\[bob\] reached bob again \(direct\): sending what was kept$`),
	}
	if len(lines) != len(want) {
		t.Fatalf("printed %q", out.String())
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d: %q does not match %s", i, lines[i], re)
		}
	}
}
