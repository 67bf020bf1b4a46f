package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/quicproquo/qpq/internal/smallfs"
	"github.com/quicproquo/qpq/node/internal/nodetest"
)

// TestDiskFull: bob's disk fills up. His own send fails and sends nothing;
// a message alice sends meanwhile waits at the home server (bob cannot
// store it, so he does not acknowledge it; he is told, and his session
// stays up) and reaches him once he has space again, once; then both
// directions work.
func TestDiskFull(t *testing.T) {
	leakCheck(t)
	srv := nodetest.StartServer(t)
	alice := serverOnlyNode(t, "alice", srv)
	fs := smallfs.Dir(t, 16<<20)
	bob := &tnode{t: t, name: "bob", dir: filepath.Join(fs, "bob"), srv: srv, serverOnly: true}
	bob.start()
	t.Cleanup(bob.stop)
	for _, tn := range []*tnode{alice, bob} {
		wait(tn, "ready", func(Ready) bool { return true })
	}
	ctx := context.Background()
	if _, err := alice.n.DM(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	wait(bob, "DM with alice", func(c Conversation) bool { return c.Name == "alice" && len(c.Members) == 2 })
	if _, err := alice.n.Send("bob", "before"); err != nil {
		t.Fatal(err)
	}
	bob.waitText("alice", "before")

	filler := filepath.Join(fs, "filler")
	fill(t, filler)
	if _, err := bob.n.Send("alice", "from a full disk"); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("bob's send on a full disk = %v, want ENOSPC", err)
	}
	if _, err := alice.n.Send("bob", "while full"); err != nil {
		t.Fatal(err)
	}
	wait(alice, "sent", func(s Sent) bool { return s.Via == "server" && s.To == "bob" })
	wait(bob, "error storing the message", func(e Error) bool { return strings.Contains(e.Message, "no space left") })

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	bob.waitText("alice", "while full")
	if _, err := bob.n.Send("alice", "space again"); err != nil {
		t.Fatal(err)
	}
	alice.waitText("bob", "space again")
	for _, ev := range alice.log.All() {
		if m, ok := ev.(Message); ok {
			t.Errorf("alice: unexpected message %+v", m)
		}
	}
	for _, ev := range bob.log.All() {
		switch ev := ev.(type) {
		case Message:
			t.Errorf("bob: extra message %+v", ev)
		case Server:
			// A message he cannot store is no reason to log in again.
			if ev.State == "down" {
				t.Errorf("bob's session to the server went down while his disk was full")
			}
		}
	}
}

// fill writes path until the file system has no space left.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}
