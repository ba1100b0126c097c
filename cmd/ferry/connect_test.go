package main

import (
	"flag"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format/wire/natsconn"
)

// TestNATSFlags: the nats CLI's flags land in the connection config.
func TestNATSFlags(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	got := addNATSFlags(fs, "test")
	if err := fs.Parse([]string{"--nats", "nats://a:1,nats://b:2", "--user", "u", "--password", "p", "--token", "t",
		"--creds", "c.creds", "--nkey", "s.nk", "--tlsca", "ca.pem", "--tlscert", "c.pem", "--tlskey", "k.pem", "--reconnect-wait", "3s"}); err != nil {
		t.Fatal(err)
	}
	want := natsconn.Config{URLs: "nats://a:1,nats://b:2", Name: "test", User: "u", Password: "p", Token: "t", CredsFile: "c.creds",
		NkeyFile: "s.nk", TLSCA: "ca.pem", TLSCert: "c.pem", TLSKey: "k.pem", ReconnectWait: 3 * time.Second}
	if *got != want {
		t.Fatalf("config %+v\nwant %+v", *got, want)
	}
}
