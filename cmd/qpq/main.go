// Command qpq is quicproquo's only binary. Each subcommand is a function
// that parses its flags and hands typed configuration to the packages
// that do the work.
//
//	qpq chat    run your node and its chat prompt (the main command)
//	qpq serve   run a home server (NodeService over QUIC, durable store)
//	qpq backup  copy a running home server's database
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "qpq:", err)
		}
		os.Exit(1)
	}
}

// errUsage reports bad command-line usage whose message was printed
// already.
var errUsage = errors.New("usage")

const usage = `usage: qpq <command> [flags]

commands:
  chat     run your node and chat (see qpq chat -h)
  serve    run a home server (see qpq serve -h)
  backup   copy a running home server's database (see qpq backup -h)
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "chat":
		return runChat(ctx, args[1:], os.Stdin, stdout, stderr)
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "backup":
		return runBackup(ctx, args[1:], os.Getenv, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "qpq: unknown command %q\n\n%s", args[0], usage)
		return errUsage
	}
}
