package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	put := func(s string) func(io.Writer) error {
		return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
	}
	if err := Write(path, 0o640, put("one"), nil); err != nil {
		t.Fatal(err)
	}
	fail := errors.New("no")
	var checked string
	for name, c := range map[string]struct {
		write func(io.Writer) error
		check func(string) error
	}{
		"the write fails": {func(w io.Writer) error { put("half")(w); return fail }, nil},
		"the check fails": {put("two"), func(tmp string) error {
			b, _ := os.ReadFile(tmp)
			checked = string(b)
			return fail
		}},
	} {
		if err := Write(path, 0o640, c.write, c.check); !errors.Is(err, fail) {
			t.Fatalf("%s: %v", name, err)
		}
		if b, _ := os.ReadFile(path); string(b) != "one" {
			t.Fatalf("%s: the file holds %q", name, b)
		}
	}
	if checked != "two" {
		t.Errorf("check saw %q, want the whole new content", checked)
	}
	if err := Write(path, 0o640, put("three"), func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if b, _ := os.ReadFile(path); err != nil || string(b) != "three" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("after a good write: %q, %v, %v", b, fi.Mode(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}
