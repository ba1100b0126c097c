//go:build !lean

package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/ferrysync/ferry/bench/demo"
)

// runDemo binds the flags of `ferry demo` to bench/demo.
func runDemo(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("ferry demo", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var cfg demo.Config
	fs.Float64Var(&cfg.Rate, "rate", 20000, "legacy writes in changes per second (0 = as fast as possible)")
	fs.IntVar(&cfg.RowSize, "row-size", 200, "approximate size of a row in bytes")
	fs.IntVar(&cfg.TxSize, "tx-size", 4, "changes per transaction")
	fs.Float64Var(&cfg.Burst, "burst", 3, "rate multiplier of the 1 s burst every 5 s (1 = a steady rate)")
	fs.DurationVar(&cfg.Duration, "duration", demo.DefaultDuration, "how long the legacy writes (0 = until Ctrl-C)")
	fs.StringVar(&cfg.HTTP, "http", "127.0.0.1:0", "listen address of the receiver's HTTP API (port 0 = a free port)")
	fs.StringVar(&cfg.Dir, "dir", "", "directory for the change files, stream and store (default: a new temporary directory, removed at the end)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the temporary directory at the end")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the synthetic workload")
	fs.Float64Var(&cfg.CanaryRate, "canary-rate", 20, "write-back: orders per second a canary service sends to the legacy as commands (0 = no canary)")
	plain := fs.Bool("plain", false, "print one line per reading instead of redrawing (the default when stdout is not a terminal)")
	verbose := fs.Bool("v", false, "log what the shipper and the receiver do (to stderr)")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, "Usage: ferry demo [--rate N] [--duration D] [--row-size B] [--tx-size N] [--http ADDR]")
		fmt.Fprintln(env.Stderr, "\nRuns an embedded JetStream server, a synthetic retail legacy writing change files,")
		fmt.Fprintln(env.Stderr, "the shipper and a receiver in one process: the roll-out of a legacy with existing rows,")
		fmt.Fprintln(env.Stderr, "dumped after a mark and loaded (as ferry load --jsonl --mark) while it writes, the")
		fmt.Fprintln(env.Stderr, "receiver's gate opening once the loads are done. Shows live figures, then verifies that")
		fmt.Fprintln(env.Stderr, "the receiver holds exactly the legacy's database, key by key (exit status 1 if not).")
		fs.PrintDefaults()
	}
	if _, ok, err := parseFlags(fs, env, args, false); !ok {
		return err
	}
	switch {
	case cfg.TxSize < 1:
		return &exitError{code: 2, err: fmt.Errorf("ferry demo: --tx-size %d: want at least 1 change per transaction", cfg.TxSize)}
	case cfg.RowSize < 16:
		return &exitError{code: 2, err: fmt.Errorf("ferry demo: --row-size %d: want at least 16 bytes", cfg.RowSize)}
	case cfg.CanaryRate < 0:
		return &exitError{code: 2, err: fmt.Errorf("ferry demo: --canary-rate %v: want 0 (no canary) or a positive rate", cfg.CanaryRate)}
	case cfg.Rate < 0:
		return &exitError{code: 2, err: fmt.Errorf("ferry demo: --rate %v: want 0 (as fast as possible) or a positive rate", cfg.Rate)}
	}
	cfg.Out = env.Stdout
	cfg.TTY = !*plain && isTerminal(env.Stdout)
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg.Log = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))
	res, err := demo.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if res.Report != nil && !res.Report.OK() {
		return &exitError{code: 1, err: fmt.Errorf("ferry demo: verification failed: %w", res.Report.Err())}
	}
	if res.WriteBack != nil && !res.WriteBack.OK() {
		return &exitError{code: 1, err: fmt.Errorf("ferry demo: write-back verification failed: %s", strings.Join(res.WriteBack.Problems, "; "))}
	}
	return nil
}
