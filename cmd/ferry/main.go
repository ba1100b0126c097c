// Command ferry ships a legacy application's change files to microservices
// through NATS JetStream. One binary, one subcommand per job; see
// `ferry help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

// Env is what a subcommand may touch of the process, so that tests can run
// subcommands in-process.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *Env, args []string) error
}

func commands() []command {
	return []command{
		{"write", "append JSON-lines changes from stdin to change files", runWrite},
		{"inspect", "dump and verify change files", runInspect},
		{"ship", "tail change files and publish them to JetStream", runShip},
		{"load", "send a legacy table's existing rows into the stream (initial load)", runLoad},
		{"receive", "apply the stream into a local store and serve it", runReceive},
		{"demo", "run writer, shipper, receiver and JetStream together, with live figures", runDemo},
		{"bench", "measure Ferry against CDC on the same workload", runBench},
		{"status", "show the lag of every stage", runStatus},
	}
}

// exitError carries a specific exit status out of a subcommand.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	err := run(ctx, env, os.Args[1:])
	stop()
	if err != nil {
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if !errors.Is(err, errUsageShown) {
			fmt.Fprintln(os.Stderr, "ferry:", err)
		}
		os.Exit(code)
	}
}

// errUsageShown marks an error whose explanation was already printed.
var errUsageShown = errors.New("usage shown")

func run(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(env.Stdout)
		if len(args) == 0 {
			return &exitError{code: 2, err: errUsageShown}
		}
		return nil
	}
	if args[0] == "--version" || args[0] == "-version" || args[0] == "version" {
		fmt.Fprintln(env.Stdout, version())
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, env, args[1:])
		}
	}
	usage(env.Stderr)
	return &exitError{code: 2, err: fmt.Errorf("unknown command %q", args[0])}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Ferry ships a legacy application's change files to microservices through NATS JetStream.")
	fmt.Fprintln(w, "\nUsage: ferry <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'ferry <command> -h' for a command's flags, 'ferry --version' for the version.")
}

// version says which build this is: the module version (a tag, or
// "(devel)" for a build from a work tree), the VCS revision and time when
// the build recorded them, and the Go version.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "ferry (no build information) " + runtime.Version()
	}
	v := "ferry " + bi.Main.Version
	var rev, at, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = ", modified"
			}
		}
	}
	if rev != "" {
		v += fmt.Sprintf(" (%.12s %s%s)", rev, at, dirty)
	}
	return v + " " + bi.GoVersion
}
