package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/quicproquo/qpq/internal/atomicfile"
	"github.com/quicproquo/qpq/node/server/admin"
	"github.com/quicproquo/qpq/relay/store"
)

// runBackup asks the home server running on a data directory for a copy
// of its database, consistent as of one moment, and writes it to a file:
// first to a temporary file beside it, synced and checked, then renamed,
// so the file named is never a partial backup.
func runBackup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("qpq backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", getenv("QPQ_DATA"), "the running server's data directory (env QPQ_DATA; default: the config file's, else as for qpq serve)")
	configFile := fs.String("config", getenv("QPQ_CONFIG"), "the server's TOML configuration file, for its data directory (env QPQ_CONFIG)")
	out := fs.String("out", "", "the file to write the backup to (replaced if it exists)")
	check := fs.String("check", "", "check a backup (or a stopped server's qpq.db) instead of making one")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: qpq backup --out FILE [--data DIR | --config FILE]\n       qpq backup --check FILE\n\nCopies the database of the home server running on DIR to FILE while it\nserves. Copy DIR/tls/ (and identity.key, hybrid.key) as well: they change\nonly when you change them. With --check, checks that FILE is a sound\nhome server database that this qpq can serve, before you restore it.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 || (*out == "") == (*check == "") {
		fs.Usage()
		return errUsage
	}
	if *check != "" {
		if err := store.CheckFile(*check); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: checked, a home server database this qpq can serve\n", *check)
		return nil
	}
	dir := *data
	if dir == "" && *configFile != "" {
		b, err := os.ReadFile(*configFile)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		var c serveConfig
		if err := parseConfigFile(b, &c); err != nil {
			return fmt.Errorf("config %s: %w", *configFile, err)
		}
		dir = c.Data
	}
	if dir == "" {
		d, err := defaultDataDir(getenv)
		if err != nil {
			return err
		}
		dir = d
	}
	n, err := writeBackup(ctx, dir, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup of %s: %d bytes, checked, in %s\n", dir, n, *out)
	return nil
}

// writeBackup fetches the backup into a temporary file next to path and
// renames it into place once it is on disk and checked.
func writeBackup(ctx context.Context, dir, path string) (int64, error) {
	var n int64
	err := atomicfile.Write(path, 0o600, func(w io.Writer) error {
		var err error
		n, err = admin.Backup(ctx, dir, w)
		return err
	}, func(tmp string) error {
		if err := store.CheckFile(tmp); err != nil {
			return fmt.Errorf("the copy does not check out: %w", err)
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("backup: %w", err)
	}
	return n, nil
}
