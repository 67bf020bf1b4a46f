package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/quicproquo/qpq/cmd/mls-interop/mlspb"
	"github.com/quicproquo/qpq/mls/cipher"
)

var fullInterop = flag.Bool("interop.full", false,
	"run every script for every cipher suite and the whole of deep_random.json (minutes)")

// instances is how many servers the scripts run against; actors are
// spread over them round-robin, so every Commit, Welcome and proposal
// crosses between two processes' worth of state over loopback gRPC.
const instances = 2

// harness is a set of mls-interop servers on loopback and a client of each.
type harness struct {
	clients []mlspb.MLSClientClient
	suites  []uint32
}

func startHarness(t *testing.T, n int) *harness {
	h := &harness{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- serve(ctx, lis, log) }()
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			conn.Close()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
		h.clients = append(h.clients, mlspb.NewMLSClientClient(conn))
	}
	// Like the test runner: the suites every client supports.
	for i, c := range h.clients {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.SupportedCiphersuites(ctx, &mlspb.SupportedCiphersuitesRequest{})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			h.suites = resp.Ciphersuites
		} else {
			h.suites = slices.DeleteFunc(h.suites, func(s uint32) bool { return !slices.Contains(resp.Ciphersuites, s) })
		}
	}
	return h
}

func loadScripts(t *testing.T, file string) map[string][]step {
	data, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Scripts map[string][]step `json:"scripts"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return cfg.Scripts
}

// TestInterop runs every script of every scenario file of the IETF interop
// harness against two instances of this server over loopback gRPC, our
// client playing every role, with handshake messages both as PublicMessage
// and as PrivateMessage. By default each runs for cipher suite 0x0001 and
// deep_random for its first deepRandomDefault steps; -interop.full runs
// every registered suite and all of deep_random.
func TestInterop(t *testing.T) {
	// Registered first, so it runs after the harness's cleanups.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	h := startHarness(t, instances)
	suites := []uint32{uint32(cipher.X25519_AES128GCM_SHA256_Ed25519)}
	if *fullInterop {
		suites = h.suites
	}
	files := []string{"welcome_join.json", "commit.json", "application.json", "external_join.json",
		"external_proposals.json", "branch.json", "reinit.json", "deep_random.json"}
	for _, file := range files {
		scripts := loadScripts(t, file)
		names := make([]string, 0, len(scripts))
		for name := range scripts {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			script := scripts[name]
			if file == "deep_random.json" && !*fullInterop && len(script) > deepRandomDefault {
				t.Logf("%s/%s: running the first %d of %d steps (-interop.full runs all)", file, name, deepRandomDefault, len(script))
				script = script[:deepRandomDefault]
			}
			for _, suite := range suites {
				for _, encrypt := range []bool{false, true} {
					mode := "public"
					if encrypt {
						mode = "private"
					}
					t.Run(fmt.Sprintf("%s/%s/suite=0x%04x/%s", file, name, suite, mode), func(t *testing.T) {
						// All of deep_random with P-521 takes about ten minutes.
						limit := 5 * time.Minute
						if *fullInterop {
							limit = time.Hour
						}
						ctx, cancel := context.WithTimeout(context.Background(), limit)
						defer cancel()
						r := newScriptRun(ctx, script, h.clients, suite, h.suites, encrypt)
						if err := r.run(script); err != nil {
							t.Fatal(err)
						}
					})
				}
			}
		}
	}
}

// TestRunnerCatchesFailures: scripts that must fail do, so a passing
// TestInterop means something.
func TestRunnerCatchesFailures(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	h := startHarness(t, instances)
	suite := uint32(cipher.X25519_AES128GCM_SHA256_Ed25519)
	for name, c := range map[string]struct {
		script string
		tamper func(r *scriptRun)
	}{
		"non-member unprotects": {script: `[
			{"action": "createGroup", "actor": "alice", "members": ["bob"]},
			{"action": "createKeyPackage", "actor": "charlie"},
			{"action": "protect", "actor": "alice", "authenticatedData": "a", "plaintext": "p"},
			{"action": "unprotect", "actor": "charlie", "ciphertext": 2}]`},
		"commit handled twice": {script: `[
			{"action": "createGroup", "actor": "alice", "members": ["bob"]},
			{"action": "fullCommit", "actor": "alice", "members": ["bob"]},
			{"action": "handleCommit", "actor": "bob", "commit": 1}]`},
		"joiner without a welcome for it": {script: `[
			{"action": "createGroup", "actor": "alice", "members": ["bob"]},
			{"action": "createKeyPackage", "actor": "charlie"},
			{"action": "fullCommit", "actor": "alice", "members": ["bob"], "joiners": ["charlie"]}]`},
		"plaintext differs": {script: `[
			{"action": "createGroup", "actor": "alice", "members": ["bob"]},
			{"action": "protect", "actor": "alice", "authenticatedData": "a", "plaintext": "p"},
			{"action": "unprotect", "actor": "bob", "ciphertext": 1}]`,
			tamper: func(r *scriptRun) { r.out[1]["plaintext"] = []byte("q") }},
	} {
		t.Run(name, func(t *testing.T) {
			var script []step
			if err := json.Unmarshal([]byte(c.script), &script); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r := newScriptRun(ctx, script, h.clients, suite, h.suites, false)
			defer r.free()
			var err error
			for i := range script {
				if err = r.step(i, &script[i]); err != nil {
					break
				}
				if c.tamper != nil && i == 1 {
					c.tamper(r)
				}
			}
			if err == nil {
				t.Fatal("the script passed")
			}
			t.Logf("failed as it must: %v", err)
		})
	}
}
