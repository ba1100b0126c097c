package main

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"
)

func TestNATSAuthOptions(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.nk")
	tests := []struct {
		name    string
		args    []string
		options int
		err     string
	}{
		{"none", nil, 0, ""},
		{"user and token", []string{"--user", "u", "--password", "p", "--token", "t"}, 2, ""},
		{"tls", []string{"--tlsca", "ca.pem", "--tlscert", "c.pem", "--tlskey", "k.pem"}, 2, ""},
		{"cert without key", []string{"--tlscert", "c.pem"}, 0, "--tlscert and --tlskey go together"},
		{"unreadable nkey", []string{"--nkey", missing}, 0, missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			f := addNATSFlags(fs, "test")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			opts, err := f.authOptions()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil || len(opts) != tt.options {
				t.Fatalf("%d options, err %v; want %d options", len(opts), err, tt.options)
			}
		})
	}
}
