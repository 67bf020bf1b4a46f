package admin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/quicproquo/qpq/relay/store"
)

// helperDir, when set, makes TestHelperBackup the client of another user
// in TestOtherUsersRefused.
const helperDir = "QPQ_ADMIN_HELPER_DIR"

func TestHelperBackup(t *testing.T) {
	dir := os.Getenv(helperDir)
	if dir == "" {
		t.Skip("run by TestOtherUsersRefused")
	}
	n, err := Backup(context.Background(), dir, io.Discard)
	fmt.Printf("backup: %d bytes, err %v\n", n, err)
}

// A user other than the server's is refused even where the socket's mode
// would let them in (as in the moment before Listen restricts it).
func TestOtherUsersRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to run a client as another user")
	}
	dir, err := os.MkdirTemp("", "qpq-admin")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(filepath.Join(dir, "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	data := filepath.Join(dir, "data")
	serve(t, data, Handler(st, slog.New(slog.DiscardHandler)))
	for _, p := range []string{dir, data} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(SocketPath(data), 0o666); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "admin.test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run", "^TestHelperBackup$", "-test.v")
	cmd.Env = append(os.Environ(), helperDir+"="+data)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "backup: 0 bytes, err admin: ") {
		t.Fatalf("another user's backup was not refused:\n%s", out)
	}
	if _, err := Backup(context.Background(), data, io.Discard); err != nil {
		t.Fatalf("the server's own user: %v", err)
	}
}
