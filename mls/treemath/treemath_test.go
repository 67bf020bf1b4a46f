package treemath

import (
	"fmt"
	"testing"

	"github.com/quicproquo/qpq/mls/internal/testvec"
)

// TestVectorTreeMath runs tree-math.json.
func TestVectorTreeMath(t *testing.T) {
	var cases []struct {
		NLeaves uint32    `json:"n_leaves"`
		NNodes  uint32    `json:"n_nodes"`
		Root    NodeIndex `json:"root"`
		Left    []*NodeIndex
		Right   []*NodeIndex
		Parent  []*NodeIndex
		Sibling []*NodeIndex
	}
	testvec.Load(t, "tree-math.json", &cases)
	tally := testvec.NewTally(t, "tree-math.json")
	for _, c := range cases {
		tally.Case(t, 0, fmt.Sprintf("n=%d", c.NLeaves), func(t *testing.T) {
			if got := NodeWidth(c.NLeaves); got != c.NNodes {
				t.Fatalf("n_nodes = %d, want %d", got, c.NNodes)
			}
			root := Root(c.NLeaves)
			if root != c.Root {
				t.Fatalf("root = %d, want %d", root, c.Root)
			}
			check := func(field string, i int, want *NodeIndex, got NodeIndex, has bool) {
				t.Helper()
				switch {
				case want == nil && has:
					t.Fatalf("%s[%d] = %d, want none", field, i, got)
				case want != nil && !has:
					t.Fatalf("%s[%d] = none, want %d", field, i, *want)
				case want != nil && got != *want:
					t.Fatalf("%s[%d] = %d, want %d", field, i, got, *want)
				}
			}
			for i := range c.NNodes {
				x := NodeIndex(i)
				leaf := x.IsLeaf()
				var l, r, p, s NodeIndex
				if !leaf {
					l, r = Left(x), Right(x)
				}
				if x != root {
					p, s = Parent(x), Sibling(x)
				}
				check("left", int(i), c.Left[i], l, !leaf)
				check("right", int(i), c.Right[i], r, !leaf)
				check("parent", int(i), c.Parent[i], p, x != root)
				check("sibling", int(i), c.Sibling[i], s, x != root)
			}
		})
	}
}

func TestPaths(t *testing.T) {
	// The eight-leaf tree of RFC 9420 Appendix C.
	const n = 8
	if got := fmt.Sprint(DirectPath(nil, 0, n)); got != "[1 3 7]" {
		t.Errorf("DirectPath(0) = %s", got)
	}
	if got := fmt.Sprint(Copath(nil, 0, n)); got != "[2 5 11]" {
		t.Errorf("Copath(0) = %s", got)
	}
	if got := fmt.Sprint(DirectPath(nil, 7, n)); got != "[]" {
		t.Errorf("DirectPath(root) = %s", got)
	}
	for _, c := range []struct{ x, y, want NodeIndex }{
		{0, 2, 1}, {0, 14, 7}, {4, 6, 5}, {8, 14, 11}, {3, 4, 3}, {9, 12, 11}, {6, 6, 6},
	} {
		if got := CommonAncestor(c.x, c.y); got != c.want {
			t.Errorf("CommonAncestor(%d, %d) = %d, want %d", c.x, c.y, got, c.want)
		}
	}
	for x := NodeIndex(0); x < 15; x++ {
		for y := NodeIndex(0); y < 15; y++ {
			want := x == y
			for _, p := range DirectPath(nil, y, n) {
				want = want || p == x
			}
			if got := IsAncestor(x, y); got != want {
				t.Errorf("IsAncestor(%d, %d) = %v, want %v", x, y, got, want)
			}
		}
	}
}
