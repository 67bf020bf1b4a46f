// Package admin is the home server's local admin API: HTTP over a Unix
// socket in the server's data directory. Only the server's own user can
// open it (the socket is mode 0600 inside the 0700 data directory, and on
// Linux the server checks each connection's peer credentials, root
// allowed), so it needs no credentials of its own and never faces the
// network. It serves
// one request today: a backup of the database, consistent as of one
// moment, taken while the server runs (`qpq backup`).
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SocketName is the socket's name inside the data directory.
const SocketName = "admin.sock"

// backupPath is the request that returns a backup.
const backupPath = "/v1/backup"

// maxSocketPath is the longest path a Unix socket can be bound to
// (sun_path less its terminating NUL).
const maxSocketPath = 107

// SocketPath is where the server with its data in dir listens.
func SocketPath(dir string) string { return filepath.Join(dir, SocketName) }

// Listen binds the socket in dir. A socket file left by a server that did
// not stop cleanly is replaced: the caller holds the data directory's
// database lock, so no other server is using it.
func Listen(dir string) (net.Listener, error) {
	path := SocketPath(dir)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("admin: socket path %s is %d bytes, longer than a Unix socket allows (%d)", path, len(path), maxSocketPath)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("admin: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: %w", err)
	}
	return ownUser{ln}, nil
}

// ownUser accepts only connections from the server's own user (or root);
// others are closed unanswered.
type ownUser struct{ net.Listener }

func (l ownUser) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || peerAllowed(c) {
			return c, err
		}
		c.Close()
	}
}

// Backuper writes a consistent copy of a database (store.Store does).
type Backuper interface {
	// Backup writes the copy to w, calling size with its length first,
	// and returns the bytes written.
	Backup(w io.Writer, size func(int64)) (int64, error)
}

// Handler serves the admin API from db.
func Handler(db Backuper, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+backupPath, func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		started := false
		n, err := db.Backup(w, func(size int64) {
			started = true
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			w.WriteHeader(http.StatusOK)
		})
		if err != nil {
			// Once the length is sent a short body is how the client
			// learns of the failure.
			if !started {
				http.Error(w, "backup failed: "+err.Error(), http.StatusInternalServerError)
			}
			log.Error("backup failed", "bytes", n, "err", err)
			return
		}
		log.Info("backup taken", "bytes", n, "took", time.Since(t0).Round(time.Millisecond))
	})
	return mux
}

// ErrNoServer reports that no server is running with its data in the
// directory given (or it runs without the admin socket).
var ErrNoServer = errors.New("admin: no home server is running with its data there")

// Backup asks the server with its data in dir for a backup and writes it
// to w. It returns the bytes written; a backup cut short is an error.
func Backup(ctx context.Context, dir string, w io.Writer) (int64, error) {
	path := SocketPath(dir)
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://admin"+backupPath, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return 0, fmt.Errorf("%w (no socket at %s)", ErrNoServer, path)
		}
		return 0, fmt.Errorf("admin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return 0, fmt.Errorf("admin: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	n, err := io.Copy(w, resp.Body)
	if err == nil && n != resp.ContentLength {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, fmt.Errorf("admin: backup cut short after %d of %d bytes: %w", n, resp.ContentLength, err)
	}
	return n, nil
}
