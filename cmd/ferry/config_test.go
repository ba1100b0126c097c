package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestApplyConfigPrecedence(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(cfg, []byte("nats: nats://file:4222\nstream: FROMFILE\nsource: [a, b]\nextra: 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name               string
		args               []string
		env                map[string]string
		nats, stream, srcs string
	}{
		{"file", nil, nil, "nats://file:4222", "FROMFILE", "a,b"},
		{"env over file", nil, map[string]string{"FERRY_STREAM": "FROMENV"}, "nats://file:4222", "FROMENV", "a,b"},
		{"flag over env", []string{"--stream", "FROMFLAG"}, map[string]string{"FERRY_STREAM": "FROMENV"}, "nats://file:4222", "FROMFLAG", "a,b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			nats := fs.String("nats", "nats://default:4222", "")
			stream := fs.String("stream", "FERRY", "")
			srcs := fs.String("source", "", "")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			env := &Env{Getenv: func(k string) string { return tt.env[k] }}
			file, err := applyConfig(fs, env, cfg, "extra")
			if err != nil {
				t.Fatal(err)
			}
			if got := file["extra"]; got != 7 {
				t.Errorf("file[extra] = %v, want 7", got)
			}
			if *nats != tt.nats || *stream != tt.stream || *srcs != tt.srcs {
				t.Errorf("got nats=%q stream=%q source=%q, want %q %q %q", *nats, *stream, *srcs, tt.nats, tt.stream, tt.srcs)
			}
		})
	}
}

// TestApplyConfigUnknownKey: a key that is no flag is refused, naming the
// flag it resembles (ready_lag for ready-lag), not ignored.
func TestApplyConfigUnknownKey(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"ready_lag: 3s\n", `unknown key "ready_lag" (did you mean "ready-lag"?`},
		{"Ready-Lag: 3s\n", `did you mean "ready-lag"?`},
		{"colour: red\n", `unknown key "colour" (keys are named like the flags: see test -h)`},
	} {
		path := filepath.Join(dir, "c.yaml")
		os.WriteFile(path, []byte(tc.yaml), 0o644)
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		lag := fs.Duration("ready-lag", 5*time.Second, "")
		_, err := applyConfig(fs, &Env{Getenv: func(string) string { return "" }}, path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: err %v, want one naming the file and saying %q", tc.yaml, err, tc.want)
		}
		if *lag != 5*time.Second {
			t.Errorf("%q: ready-lag = %v, want the default kept", tc.yaml, *lag)
		}
	}
}

func TestApplyConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("linger: [oops\n"), 0o644)
	badValue := filepath.Join(dir, "badvalue.yaml")
	os.WriteFile(badValue, []byte("linger: soon\n"), 0o644)
	for _, tt := range []struct{ name, path string }{
		{"missing file", filepath.Join(dir, "nope.yaml")},
		{"bad yaml", bad},
		{"bad value", badValue},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.Duration("linger", 0, "")
			if _, err := applyConfig(fs, &Env{Getenv: func(string) string { return "" }}, tt.path); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ferry.yaml")
	os.WriteFile(cfg, []byte("stream: FROMFILE\n"), 0o644)
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		positional bool
		ok         bool
		code       int // exit status of the error, 0 for none
		stream     string
	}{
		{"defaults", nil, nil, false, true, 0, "FERRY"},
		{"help", []string{"-h"}, nil, false, false, 0, ""},
		{"bad flag", []string{"--nope"}, nil, false, false, 2, ""},
		{"positional refused", []string{"x"}, nil, false, false, 2, ""},
		{"positional allowed", []string{"x"}, nil, true, true, 0, "FERRY"},
		{"config flag", []string{"--config", cfg}, nil, false, true, 0, "FROMFILE"},
		{"FERRY_CONFIG", nil, map[string]string{"FERRY_CONFIG": cfg}, false, true, 0, "FROMFILE"},
		{"missing config", []string{"--config", cfg + ".missing"}, nil, false, false, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("ferry test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			fs.String("config", "", "")
			stream := fs.String("stream", "FERRY", "")
			env := &Env{Getenv: func(k string) string { return tt.env[k] }}
			_, ok, err := parseFlags(fs, env, tt.args, tt.positional)
			if ok != tt.ok {
				t.Fatalf("ok=%v err=%v, want ok=%v", ok, err, tt.ok)
			}
			var ee *exitError
			if code := 0; tt.code != 0 {
				if !errors.As(err, &ee) || ee.code != tt.code {
					t.Fatalf("err %v, want exit status %d", err, tt.code)
				}
			} else if err != nil {
				t.Fatalf("err %v (code %d)", err, code)
			}
			if ok && *stream != tt.stream {
				t.Fatalf("stream %q, want %q", *stream, tt.stream)
			}
		})
	}
}
