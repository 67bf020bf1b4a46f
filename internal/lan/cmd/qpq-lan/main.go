// Command qpq-lan builds throwaway LANs of network namespaces for manual
// experiments and scripts; scripts/lan runs it. See package lan.
//
//	qpq-lan run [-n nodes] [-subnet cidr] [-- command [args...]]
//	qpq-lan cut|restore <lan-id> <node>
//	qpq-lan block|unblock <lan-id> <node> <node>
//	qpq-lan exec <lan-id> <node> command [args...]
//	qpq-lan list
//	qpq-lan clean
//
// "run" builds the LAN, runs the command (default: wait for Ctrl-C) with
// QPQ_LAN_ID, QPQ_LAN_NODES, QPQ_LAN_NS_<i> and QPQ_LAN_ADDR_<i> in its
// environment, and removes the LAN when the command ends or on SIGINT,
// SIGTERM or SIGHUP. The other subcommands act on a running LAN by id,
// e.g. from inside the command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/quicproquo/qpq/internal/lan"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		os.Exit(exit.ExitCode()) // the command's own status; it said why
	case err != nil:
		fmt.Fprintln(os.Stderr, "qpq-lan:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  scripts/lan run [-n nodes] [-subnet cidr] [-- command [args...]]
  scripts/lan cut|restore <lan-id> <node>
  scripts/lan block|unblock <lan-id> <node> <node>
  scripts/lan exec <lan-id> <node> command [args...]
  scripts/lan list
  scripts/lan clean`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return runLAN(ctx, args, stdout, stderr)
	case "cut", "restore":
		l, nodes, err := attach(ctx, args, 1)
		if err != nil {
			return err
		}
		if cmd == "cut" {
			return l.Cut(ctx, nodes[0])
		}
		return l.Restore(ctx, nodes[0])
	case "block", "unblock":
		l, nodes, err := attach(ctx, args, 2)
		if err != nil {
			return err
		}
		if cmd == "block" {
			return l.Block(ctx, nodes[0], nodes[1])
		}
		return l.Unblock(ctx, nodes[0], nodes[1])
	case "exec":
		if len(args) < 3 {
			return errors.New(usage)
		}
		l, nodes, err := attach(ctx, args[:2], 1)
		if err != nil {
			return err
		}
		c, err := l.Command(ctx, nodes[0], args[2], args[3:]...)
		if err != nil {
			return err
		}
		c.Stdin, c.Stdout, c.Stderr = os.Stdin, stdout, stderr
		return c.Run()
	case "list":
		ids, err := lan.IDs(ctx)
		if err != nil {
			return err
		}
		for _, id := range ids {
			fmt.Fprintln(stdout, id)
		}
		return nil
	case "clean":
		removed, err := lan.CleanStale(ctx)
		for _, ns := range removed {
			fmt.Fprintln(stdout, "removed", ns)
		}
		return err
	}
	return fmt.Errorf("unknown subcommand %q\n%s", cmd, usage)
}

func attach(ctx context.Context, args []string, n int) (*lan.LAN, []int, error) {
	if len(args) != 1+n {
		return nil, nil, errors.New(usage)
	}
	var nodes []int
	for _, a := range args[1:] {
		i, err := strconv.Atoi(a)
		if err != nil {
			return nil, nil, fmt.Errorf("node %q: want a number", a)
		}
		nodes = append(nodes, i)
	}
	l, err := lan.Attach(ctx, args[0])
	return l, nodes, err
}

func runLAN(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 3, "number of nodes")
	subnet := fs.String("subnet", lan.DefaultSubnet, "IPv4 subnet of the bridge")
	if err := fs.Parse(args); err != nil {
		return err
	}
	prefix, err := netip.ParsePrefix(*subnet)
	if err != nil {
		return fmt.Errorf("-subnet: %v", err)
	}
	l, err := lan.New(ctx, lan.Config{Nodes: *n, Subnet: prefix})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	env := append(os.Environ(), "QPQ_LAN_ID="+l.ID, fmt.Sprintf("QPQ_LAN_NODES=%d", len(l.Nodes)))
	fmt.Fprintf(stdout, "LAN %s on %s (bridge in namespace %s)\n", l.ID, l.Subnet, l.Switch())
	for _, nd := range l.Nodes {
		fmt.Fprintf(stdout, "  node %d: namespace %s, %s %s\n", nd.Index, nd.NS, lan.Iface, nd.Addr)
		env = append(env,
			fmt.Sprintf("QPQ_LAN_NS_%d=%s", nd.Index, nd.NS),
			fmt.Sprintf("QPQ_LAN_ADDR_%d=%s", nd.Index, nd.Addr))
	}

	if fs.NArg() == 0 {
		fmt.Fprintln(stdout, "Ctrl-C removes it.")
		<-ctx.Done()
		return nil
	}
	c := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	c.Env, c.Stdin, c.Stdout, c.Stderr = env, os.Stdin, stdout, stderr
	if err := c.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// Pass the signal on, then remove the LAN once the command is gone.
		c.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			c.Process.Kill()
			return <-done
		}
	}
}
