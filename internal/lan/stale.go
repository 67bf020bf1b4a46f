package lan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// nameRE matches the namespaces this package creates:
// qpq-<owner pid>-<lan number>-<sw|n<index>>.
var nameRE = regexp.MustCompile(`^(qpq-([0-9]+)-[0-9]+)-(sw|n([0-9]+))$`)

// CleanStale deletes the namespaces of LANs whose owning process has died
// and returns their names. Namespaces of live owners (this process
// included) and names not made by this package are never touched.
func CleanStale(ctx context.Context) ([]string, error) {
	names, err := listNS(ctx)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, ns := range names {
		m := nameRE.FindStringSubmatch(ns)
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[2])
		if err != nil || processAlive(pid) {
			continue
		}
		if err := deleteNS(ctx, ns); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, ns)
	}
	return removed, errors.Join(errs...)
}

// IDs returns the ids of the LANs that exist now, with their owners alive
// or not, sorted.
func IDs(ctx context.Context) ([]string, error) {
	names, err := listNS(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var ids []string
	for _, ns := range names {
		if m := nameRE.FindStringSubmatch(ns); m != nil && !seen[m[1]] {
			seen[m[1]] = true
			ids = append(ids, m[1])
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Attach returns a handle on an existing LAN built by another process (the
// one running scripts/lan), so that Cut, Block and Command work on it.
// Close on an attached LAN deletes it.
func Attach(ctx context.Context, id string) (*LAN, error) {
	names, err := listNS(ctx)
	if err != nil {
		return nil, err
	}
	l := &LAN{ID: id, blocked: make(map[[2]int]bool)}
	found := false
	for _, ns := range names {
		m := nameRE.FindStringSubmatch(ns)
		if m == nil || m[1] != id {
			continue
		}
		found = true
		if m[3] == "sw" {
			continue
		}
		i, _ := strconv.Atoi(m[4])
		addr, prefix, err := ifaceAddr(ctx, ns)
		if err != nil {
			return nil, err
		}
		l.Subnet = prefix.Masked()
		l.Nodes = append(l.Nodes, Node{Index: i, NS: ns, Addr: addr, port: fmt.Sprintf("p%d", i)})
	}
	if !found {
		return nil, fmt.Errorf("lan: no LAN %q (see: scripts/lan list)", id)
	}
	sort.Slice(l.Nodes, func(a, b int) bool { return l.Nodes[a].Index < l.Nodes[b].Index })
	for i, n := range l.Nodes {
		if n.Index != i {
			return nil, fmt.Errorf("lan: LAN %q is incomplete: node %d missing", id, i)
		}
	}
	// Rules a previous invocation added are visible in the namespaces.
	for _, a := range l.Nodes {
		out, err := ipOutput(ctx, "-n", a.NS, "rule", "list", "pref", blockPref)
		if err != nil {
			return nil, err
		}
		for _, b := range l.Nodes {
			if strings.Contains(out, "from "+b.Addr.String()+" ") {
				l.blocked[[2]int{min(a.Index, b.Index), max(a.Index, b.Index)}] = true
			}
		}
	}
	return l, nil
}

// ifaceAddr reads the IPv4 address of Iface in namespace ns.
func ifaceAddr(ctx context.Context, ns string) (netip.Addr, netip.Prefix, error) {
	out, err := ipOutput(ctx, "-n", ns, "-4", "-o", "addr", "show", "dev", Iface)
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, err
	}
	// "2: eth0    inet 10.77.0.1/24 scope global eth0\       valid_lft …"
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "inet" {
			p, err := netip.ParsePrefix(f[i+1])
			if err != nil {
				return netip.Addr{}, netip.Prefix{}, fmt.Errorf("lan: %s: %v", ns, err)
			}
			return p.Addr(), p, nil
		}
	}
	return netip.Addr{}, netip.Prefix{}, fmt.Errorf("lan: %s has no IPv4 address on %s", ns, Iface)
}
