package lan_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/internal/lan"
	"github.com/quicproquo/qpq/internal/lan/lantest"
)

func TestMain(m *testing.M) {
	if lantest.Mode() != "" {
		lantest.Serve(udpChild())
	}
	os.Exit(m.Run())
}

const echoPort = 9000

// udpChild answers "listen" (start a UDP echo server on the node's
// address) and "probe" (send one datagram to an address, report whether
// the echo came back).
func udpChild() lantest.Handler {
	var conn *net.UDPConn
	return func(ctx context.Context, op string, raw json.RawMessage) (any, error) {
		switch op {
		case "listen":
			var addr string
			if err := json.Unmarshal(raw, &addr); err != nil {
				return nil, err
			}
			c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), echoPort)))
			if err != nil {
				return nil, err
			}
			conn = c
			go func() {
				buf := make([]byte, 1500)
				for {
					n, from, err := c.ReadFromUDP(buf)
					if err != nil {
						return
					}
					c.WriteToUDP(buf[:n], from)
				}
			}()
			return nil, nil
		case "probe":
			var addr string
			if err := json.Unmarshal(raw, &addr); err != nil {
				return nil, err
			}
			return probe(addr), nil
		case "close":
			if conn != nil {
				conn.Close()
			}
			return nil, nil
		}
		return nil, fmt.Errorf("unknown op %q", op)
	}
}

// probe reports whether one datagram to addr is echoed within 300 ms.
func probe(addr string) bool {
	c, err := net.Dial("udp4", net.JoinHostPort(addr, fmt.Sprint(echoPort)))
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte("ping")); err != nil {
		return false
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	return err == nil && string(buf[:n]) == "ping"
}

func TestConfigValidation(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []lan.Config{
		{Nodes: 0},
		{Nodes: lan.MaxNodes + 1},
		{Nodes: 5, Subnet: netip.MustParsePrefix("10.1.0.0/30")},
		{Nodes: 1, Subnet: netip.MustParsePrefix("fd00::/64")},
	} {
		if l, err := lan.New(ctx, cfg); err == nil {
			l.Close()
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
}

// A LAN connects every node to every other; Block separates two nodes
// that both still reach a third; Cut isolates a node; both undo.
func TestReachabilityBlockAndCut(t *testing.T) {
	lantest.VerifyNoLeaks(t)
	l := lantest.New(t, 3)
	ctx := lantest.Context(t, time.Minute)
	kids := make([]*lantest.Child, 3)
	for i := range kids {
		kids[i] = lantest.Spawn(t, l, i, "udp")
		kids[i].Call("listen", l.Nodes[i].Addr.String(), nil)
	}
	reach := func(from, to int) bool {
		t.Helper()
		var ok bool
		kids[from].Call("probe", l.Nodes[to].Addr.String(), &ok)
		return ok
	}
	// A bridge port may take a moment to forward after it is attached,
	// so "reachable" is allowed a few tries; "unreachable" must hold on
	// every try.
	eventually := func(from, to int) bool {
		t.Helper()
		for range 10 {
			if reach(from, to) {
				return true
			}
		}
		return false
	}
	for i := range 3 {
		for j := range 3 {
			if i != j && !eventually(i, j) {
				t.Fatalf("node %d cannot reach node %d on a fresh LAN", i, j)
			}
		}
	}

	if err := l.Block(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := l.Block(ctx, 1, 0); err != nil { // already blocked: no-op
		t.Fatal(err)
	}
	if reach(0, 1) || reach(1, 0) {
		t.Error("blocked nodes 0 and 1 still reach each other")
	}
	if !eventually(0, 2) || !eventually(1, 2) {
		t.Error("blocked nodes lost the third node")
	}
	if err := l.Unblock(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	if !eventually(0, 1) || !eventually(1, 0) {
		t.Error("unblocked nodes cannot reach each other")
	}

	if err := l.Cut(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if reach(0, 2) || reach(2, 1) {
		t.Error("a cut node is still reachable")
	}
	if !eventually(0, 1) {
		t.Error("cutting node 2 broke the link between 0 and 1")
	}
	if err := l.Restore(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if !eventually(0, 2) || !eventually(2, 1) {
		t.Error("a restored node is unreachable")
	}
}

// Attach sees a LAN built elsewhere, including its blocks.
func TestAttach(t *testing.T) {
	l := lantest.New(t, 2)
	ctx := lantest.Context(t, time.Minute)
	if err := l.Block(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	a, err := lan.Attach(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Nodes) != 2 || a.Nodes[1].Addr != l.Nodes[1].Addr || a.Nodes[0].NS != l.Nodes[0].NS || a.Subnet != l.Subnet {
		t.Fatalf("attached %+v, built %+v", a.Nodes, l.Nodes)
	}
	if err := a.Unblock(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := l.Unblock(ctx, 0, 1); err == nil {
		// l still believes the pair is blocked and tries to delete the
		// rules a already deleted.
		t.Error("second unblock of the same rules succeeded")
	}
	ids, err := lan.IDs(ctx)
	if err != nil || !slices.Contains(ids, l.ID) {
		t.Fatalf("IDs() = %v, %v; want it to contain %s", ids, err, l.ID)
	}
	if _, err := lan.Attach(ctx, "qpq-0-0"); err == nil {
		t.Error("attached a LAN that does not exist")
	}
}

// Close removes every namespace, and is idempotent; CleanStale removes
// namespaces of dead owners only.
func TestCloseAndCleanStale(t *testing.T) {
	lantest.Require(t)
	ctx := lantest.Context(t, time.Minute)
	l := lantest.New(t, 2)
	live := l.ID

	// A dead owner: a process that has exited.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("qpq-%d-1-n0", cmd.Process.Pid)
	foreign := fmt.Sprintf("qpq-%d-foreign", cmd.Process.Pid) // not our name pattern
	for _, ns := range []string{dead, foreign} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	removed, err := lan.CleanStale(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, dead) {
		t.Errorf("CleanStale removed %v, not the dead owner's %s", removed, dead)
	}
	for _, r := range removed {
		if strings.HasPrefix(r, live) || r == foreign {
			t.Errorf("CleanStale removed %s", r)
		}
	}
	if nsList(t)[foreign] == false {
		t.Errorf("CleanStale removed %s, a name it does not own", foreign)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for ns := range nsList(t) {
		if strings.HasPrefix(ns, live+"-") {
			t.Errorf("namespace %s survived Close", ns)
		}
	}
	if err := l.Cut(ctx, 0); err == nil {
		t.Error("Cut on a closed LAN succeeded")
	}
	if err := l.Cut(ctx, 7); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("Cut of a missing node: %v", err)
	}
}

func nsList(t *testing.T) map[string]bool {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			m[f[0]] = true
		}
	}
	return m
}
