package main

import (
	"flag"
	"log/slog"
	"time"

	"github.com/ferrysync/ferry/format/wire/natsconn"
)

// addNATSFlags binds the connection flags every command that talks to NATS
// takes, named as the nats CLI names them, to a natsconn.Config (the
// connection policy lives there).
func addNATSFlags(fs *flag.FlagSet, name string) *natsconn.Config {
	c := &natsconn.Config{Name: name}
	fs.StringVar(&c.URLs, "nats", natsconn.DefaultURL, "NATS server URLs, comma separated")
	fs.StringVar(&c.User, "user", "", "NATS user name")
	fs.StringVar(&c.Password, "password", "", "NATS password, with --user (prefer FERRY_PASSWORD)")
	fs.StringVar(&c.Token, "token", "", "NATS token (prefer FERRY_TOKEN)")
	fs.StringVar(&c.CredsFile, "creds", "", "NATS credentials file (JWT + nkey seed)")
	fs.StringVar(&c.NkeyFile, "nkey", "", "NATS nkey seed file")
	fs.StringVar(&c.TLSCA, "tlsca", "", "CA certificate file to verify the NATS servers")
	fs.StringVar(&c.TLSCert, "tlscert", "", "client certificate file for TLS")
	fs.StringVar(&c.TLSKey, "tlskey", "", "client private key file for TLS")
	fs.DurationVar(&c.ReconnectWait, "reconnect-wait", time.Second, "wait between reconnection attempts")
	return c
}

// withLogger returns c with the command's logger.
func withLogger(c *natsconn.Config, log *slog.Logger) natsconn.Config {
	cfg := *c
	cfg.Logger = log
	return cfg
}
