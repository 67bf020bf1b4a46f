package lan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults and limits.
const (
	// DefaultSubnet is the subnet of a LAN whose Config leaves it empty.
	// Every LAN lives in its own namespaces, so LANs never collide on it.
	DefaultSubnet = "10.77.0.0/24"
	// MaxNodes bounds Config.Nodes.
	MaxNodes = 200
	// Iface is the name of every node's interface on the LAN.
	Iface = "eth0"

	bridge     = "br0"
	blockPref  = "100" // ip rule priority of Block's rules: before local delivery
	localPref  = "200" // where the "lookup local" rule moves to make room
	cmdTimeout = 10 * time.Second
)

// Config describes a LAN to build.
type Config struct {
	// Nodes is the number of node namespaces, 1 to MaxNodes.
	Nodes int
	// Subnet is the IPv4 subnet of the bridge; node i gets the (i+1)th
	// address in it. The zero value means DefaultSubnet.
	Subnet netip.Prefix
}

// Node is one namespace on a LAN.
type Node struct {
	Index int
	NS    string     // network namespace name
	Addr  netip.Addr // IPv4 address on Iface
	port  string     // the bridge-side end of its veth, in the switch namespace
}

// LAN is a set of namespaces on one bridge. Its methods are safe for
// concurrent use.
type LAN struct {
	ID     string // "qpq-<pid>-<n>"; every namespace name starts with it
	Subnet netip.Prefix
	Nodes  []Node

	mu      sync.Mutex // guards the fields below
	blocked map[[2]int]bool
	closed  bool
}

var lanSeq atomic.Uint64

// Available reports why LANs cannot be built on this machine, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("lan: network namespaces need root (run as root, as CI does)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("lan: ip(8) not found: install iproute2")
	}
	return nil
}

// New builds a LAN. Stale namespaces of dead owners are removed first. On
// error nothing of the new LAN is left behind.
func New(ctx context.Context, cfg Config) (*LAN, error) {
	if cfg.Nodes < 1 || cfg.Nodes > MaxNodes {
		return nil, fmt.Errorf("lan: %d nodes: want 1 to %d", cfg.Nodes, MaxNodes)
	}
	subnet := cfg.Subnet
	if !subnet.IsValid() {
		subnet = netip.MustParsePrefix(DefaultSubnet)
	}
	subnet = subnet.Masked()
	if !subnet.Addr().Is4() || subnet.Bits() > 30 || 1<<(32-subnet.Bits())-2 < cfg.Nodes {
		return nil, fmt.Errorf("lan: subnet %s cannot hold %d nodes", subnet, cfg.Nodes)
	}
	if err := Available(); err != nil {
		return nil, err
	}
	// Best effort: a failure to remove someone else's leftovers must not
	// stop this run.
	_, _ = CleanStale(ctx)

	l := &LAN{
		ID:      fmt.Sprintf("qpq-%d-%d", os.Getpid(), lanSeq.Add(1)),
		Subnet:  subnet,
		blocked: make(map[[2]int]bool),
	}
	addr := subnet.Addr()
	for i := range cfg.Nodes {
		addr = addr.Next()
		l.Nodes = append(l.Nodes, Node{
			Index: i,
			NS:    fmt.Sprintf("%s-n%d", l.ID, i),
			Addr:  addr,
			port:  fmt.Sprintf("p%d", i),
		})
	}
	if err := l.build(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Switch is the name of the namespace holding the bridge.
func (l *LAN) Switch() string { return l.ID + "-sw" }

func (l *LAN) build(ctx context.Context) error {
	sw := l.Switch()
	steps := [][]string{
		{"netns", "add", sw},
		{"-n", sw, "link", "set", "lo", "up"},
		// Multicast snooping off: with no IGMP querier on this LAN the
		// bridge would otherwise make its own guesses about group members.
		{"-n", sw, "link", "add", bridge, "type", "bridge", "mcast_snooping", "0"},
		{"-n", sw, "link", "set", bridge, "addrgenmode", "none"},
		{"-n", sw, "link", "set", bridge, "up"},
	}
	for _, n := range l.Nodes {
		prefix := netip.PrefixFrom(n.Addr, l.Subnet.Bits()).String()
		steps = append(steps,
			[]string{"netns", "add", n.NS},
			[]string{"link", "add", "name", Iface, "netns", n.NS, "type", "veth", "peer", "name", n.port, "netns", sw},
			[]string{"-n", sw, "link", "set", n.port, "addrgenmode", "none"},
			[]string{"-n", sw, "link", "set", n.port, "master", bridge, "up"},
			// IPv4 only: no IPv6 link-local address, so Block is complete.
			[]string{"-n", n.NS, "link", "set", Iface, "addrgenmode", "none"},
			[]string{"-n", n.NS, "addr", "add", prefix, "dev", Iface},
			[]string{"-n", n.NS, "link", "set", Iface, "up"},
			[]string{"-n", n.NS, "link", "set", "lo", "up"},
			// mDNS joins 224.0.0.251 on Iface; without a route for the
			// multicast range the join fails (there is no default route).
			[]string{"-n", n.NS, "route", "add", "224.0.0.0/4", "dev", Iface},
			// Move local delivery behind Block's rules (see Block).
			[]string{"-n", n.NS, "rule", "add", "pref", localPref, "lookup", "local"},
			[]string{"-n", n.NS, "rule", "del", "pref", "0"},
		)
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// Close deletes every namespace of the LAN. Processes still running inside
// keep their namespace alive until they exit; kill them first. Close is
// idempotent.
func (l *LAN) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var errs []error
	for _, ns := range l.namespaces() {
		if err := deleteNS(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *LAN) namespaces() []string {
	names := []string{l.Switch()}
	for _, n := range l.Nodes {
		names = append(names, n.NS)
	}
	return names
}

func (l *LAN) node(i int) (Node, error) {
	if i < 0 || i >= len(l.Nodes) {
		return Node{}, fmt.Errorf("lan: no node %d (have %d)", i, len(l.Nodes))
	}
	return l.Nodes[i], nil
}

// Cut detaches node i from the bridge: from then on its packets are lost
// without any error or carrier change on its side.
func (l *LAN) Cut(ctx context.Context, i int) error {
	n, err := l.node(i)
	if err != nil {
		return err
	}
	return ip(ctx, "-n", l.Switch(), "link", "set", n.port, "nomaster")
}

// Restore reattaches node i to the bridge after Cut.
func (l *LAN) Restore(ctx context.Context, i int) error {
	n, err := l.node(i)
	if err != nil {
		return err
	}
	return ip(ctx, "-n", l.Switch(), "link", "set", n.port, "master", bridge)
}

// Block makes nodes i and j silently drop every packet from each other,
// while both still reach the rest of the LAN. Blocking a blocked pair is a
// no-op.
func (l *LAN) Block(ctx context.Context, i, j int) error {
	return l.setBlock(ctx, i, j, true)
}

// Unblock lifts Block(i, j).
func (l *LAN) Unblock(ctx context.Context, i, j int) error {
	return l.setBlock(ctx, i, j, false)
}

func (l *LAN) setBlock(ctx context.Context, i, j int, on bool) error {
	a, err := l.node(i)
	if err != nil {
		return err
	}
	b, err := l.node(j)
	if err != nil {
		return err
	}
	if i == j {
		return fmt.Errorf("lan: cannot block node %d from itself", i)
	}
	key := [2]int{min(i, j), max(i, j)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blocked[key] == on {
		return nil
	}
	verb := "del"
	if on {
		verb = "add"
	}
	// An input rule at the receiver drops without telling the sender,
	// which a blackhole route at the sender would (EINVAL on send).
	for _, p := range [][2]Node{{a, b}, {b, a}} {
		if err := ip(ctx, "-n", p[0].NS, "rule", verb, "pref", blockPref,
			"from", p[1].Addr.String(), "blackhole"); err != nil {
			return err
		}
	}
	l.blocked[key] = on
	return nil
}

// Command returns a command that runs name inside node i's namespace.
func (l *LAN) Command(ctx context.Context, i int, name string, args ...string) (*exec.Cmd, error) {
	n, err := l.node(i)
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NS, name}, args...)...), nil
}

// ip runs ip(8) with args and returns its output in the error on failure.
func ip(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("lan: ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func ipOutput(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("lan: ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

func deleteNS(ctx context.Context, ns string) error {
	err := ip(ctx, "netns", "del", ns)
	if err != nil && !nsExists(ctx, ns) {
		return nil // already gone
	}
	return err
}

func nsExists(ctx context.Context, ns string) bool {
	names, err := listNS(ctx)
	if err != nil {
		return true
	}
	for _, n := range names {
		if n == ns {
			return true
		}
	}
	return false
}

// listNS returns the names of all named network namespaces.
func listNS(ctx context.Context) ([]string, error) {
	out, err := ipOutput(ctx, "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		// "name" or "name (id: 3)"
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}
