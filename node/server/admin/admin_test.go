package admin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/relay/store"
)

// serve serves h on the admin socket of dir until the test ends.
func serve(t *testing.T, dir string, h http.Handler) {
	t.Helper()
	ln, err := Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Second}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

func TestBackupOverTheSocket(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var alice, bob store.Key
	alice[0], bob[0] = 1, 2
	if _, err := st.Enqueue(alice, []store.Key{bob}, store.ChannelID{}, []byte("kept")); err != nil {
		t.Fatal(err)
	}
	serve(t, dir, Handler(st, slog.New(slog.DiscardHandler)))
	fi, err := os.Stat(SocketPath(dir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}

	var buf bytes.Buffer
	n, err := Backup(context.Background(), dir, &buf)
	if err != nil || n == 0 || int64(buf.Len()) != n {
		t.Fatalf("Backup: %d bytes (%d received), %v", n, buf.Len(), err)
	}
	restored := t.TempDir()
	if err := os.WriteFile(filepath.Join(restored, store.FileName), buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := store.CheckFile(filepath.Join(restored, store.FileName)); err != nil {
		t.Fatal(err)
	}
	rst, err := store.Open(restored, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rst.Close()
	if got, err := rst.Peek(store.Inbox{Recipient: bob}, 0, 1<<20); err != nil || len(got) != 1 || string(got[0].Data) != "kept" {
		t.Fatalf("the backup's inbox: %v, %v", got, err)
	}
}

// failing announces a backup and breaks off after a few bytes, as a disk
// error in the middle of one would.
type failing struct{}

func (failing) Backup(w io.Writer, size func(int64)) (int64, error) {
	size(100)
	n, _ := w.Write(make([]byte, 10))
	return int64(n), errors.New("read error")
}

func TestBackupCutShort(t *testing.T) {
	dir := t.TempDir()
	serve(t, dir, Handler(failing{}, slog.New(slog.DiscardHandler)))
	_, err := Backup(context.Background(), dir, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "cut short after 10 of 100 bytes") {
		t.Fatalf("Backup = %v, want it cut short", err)
	}
}

func TestNoServer(t *testing.T) {
	dir := t.TempDir()
	if _, err := Backup(context.Background(), dir, io.Discard); !errors.Is(err, ErrNoServer) {
		t.Fatalf("no socket: %v, want ErrNoServer", err)
	}
	// A socket left by a server that was killed: nobody accepts on it.
	ln, err := Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	ln.(ownUser).Listener.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Backup(context.Background(), dir, io.Discard); !errors.Is(err, ErrNoServer) {
		t.Fatalf("stale socket: %v, want ErrNoServer", err)
	}
	// The next server replaces it.
	ln, err = Listen(dir)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()
}

func TestListenRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(SocketPath(dir), []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(dir); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a file: %v", err)
	}
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if err := os.Mkdir(long, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(long); err == nil || !strings.Contains(err.Error(), "longer than a Unix socket allows") {
		t.Fatalf("Listen with a long path: %v", err)
	}
}
