package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/quicproquo/qpq/node/server/admin"
	"github.com/quicproquo/qpq/relay/store"
	"github.com/quicproquo/qpq/rpc"
)

// TestBackupWhileServing backs up a `qpq serve` process while a client
// keeps enqueueing: the backup checks out, holds every message
// acknowledged before it, and a server started on it serves them.
func TestBackupWhileServing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the qpq binary")
	}
	data := t.TempDir()
	p := startProcess(t, data)
	if p.admin != admin.SocketPath(data) {
		t.Fatalf("admin socket line %q, want %s", p.admin, admin.SocketPath(data))
	}
	ctx := context.Background()
	id, _, _ := ed25519.GenerateKey(rand.Reader)
	conn, err := rpc.Dial(ctx, p.addr, rpc.DialOptions{Pin: p.fp})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := conn.Client()
	if err := c.Register(ctx, "keeper", []byte("pw"), id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(ctx, "keeper", []byte("pw"), id); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := c.Enqueue(ctx, id, nil, []byte(fmt.Sprint("before ", i))); err != nil {
			t.Fatal(err)
		}
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // writes racing with the backup
		defer wg.Done()
		for i := 0; wctx.Err() == nil; i++ {
			c.Enqueue(wctx, id, nil, []byte(fmt.Sprint("during ", i)))
		}
	}()

	out := filepath.Join(t.TempDir(), "qpq-backup.db")
	var stdout bytes.Buffer
	err = run(ctx, []string{"backup", "--data", data, "--out", out}, &stdout, io.Discard)
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "backup of "+data+": ") || !strings.Contains(stdout.String(), "checked, in "+out) {
		t.Errorf("backup said %q", stdout.String())
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v (want mode 0600)", fi, err)
	}
	if err := store.CheckFile(out); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*.tmp")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// Restore: the backup as the database of a new server, with the
	// original's certificate so the same pin works.
	restored := t.TempDir()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(restored, store.FileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(restored, "tls"), os.DirFS(filepath.Join(data, "tls"))); err != nil {
		t.Fatal(err)
	}
	p.stop()
	q := startProcess(t, restored)
	rc, err := rpc.Dial(ctx, q.addr, rpc.DialOptions{Pin: p.fp})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := rc.Client().Login(ctx, "keeper", []byte("pw"), id); err != nil {
		t.Fatalf("the account in the backup: %v", err)
	}
	envs, err := rc.Client().Peek(ctx, id, nil, 0)
	if err != nil || len(envs) < 20 {
		t.Fatalf("peek after restoring: %d messages, %v", len(envs), err)
	}
	for i, e := range envs[:20] {
		if want := fmt.Sprint("before ", i); string(e.Data) != want || e.Seq != uint64(i+1) {
			t.Fatalf("message %d after restoring: seq %d %q, want seq %d %q", i, e.Seq, e.Data, i+1, want)
		}
	}
}

func TestBackupWithoutServer(t *testing.T) {
	out := filepath.Join(t.TempDir(), "b.db")
	err := run(context.Background(), []string{"backup", "--data", t.TempDir(), "--out", out}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no home server is running") {
		t.Fatalf("backup without a server: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a failed backup left %s: %v", out, err)
	}
	// The data directory of the server's config file, when --data is not
	// given.
	dir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "qpq.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("data = %q\n", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"backup", "--config", cfg, "--out", out}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), admin.SocketPath(dir)) {
		t.Fatalf("backup with --config: %v, want the config's data directory", err)
	}
	if err := run(context.Background(), []string{"backup"}, io.Discard, io.Discard); err != errUsage {
		t.Fatalf("backup without --out: %v, want a usage error", err)
	}
	if err := run(context.Background(), []string{"backup", "--out", out, "--check", out}, io.Discard, io.Discard); err != errUsage {
		t.Fatalf("backup with --out and --check: %v, want a usage error", err)
	}
}

// TestBackupCheck: --check says whether a file is a database this qpq can
// serve, before someone restores it.
func TestBackupCheck(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	path := filepath.Join(dir, store.FileName)
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"backup", "--check", path}, &stdout, io.Discard); err != nil {
		t.Fatalf("--check of a sound database: %v", err)
	}
	if !strings.Contains(stdout.String(), "checked") {
		t.Errorf("output %q", stdout.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(t.TempDir(), "damaged.db")
	if err := os.WriteFile(damaged, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"backup", "--check", damaged}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("--check of a damaged database: %v", err)
	}
}
