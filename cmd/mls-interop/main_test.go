package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestRun: the command serves on loopback until its context ends and
// refuses bad flags.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, args := range [][]string{{"-port", "70000"}, {"stray"}, {"-nope"}} {
		if err := run(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-port", "0"}, &logs) }()
	cancel() // run listens and logs first, then sees the end of ctx
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "addr=127.0.0.1:") {
		t.Fatalf("not listening on loopback: %s", logs.String())
	}
}
