package repl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
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
