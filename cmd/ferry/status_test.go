package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/shipper"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startJetStream starts an embedded JetStream server on a free loopback port.
func startJetStream(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	err := run(context.Background(), env, args)
	if err != nil {
		t.Logf("stderr: %s", errOut.String())
	}
	return out.String(), err
}

func TestStatus(t *testing.T) {
	dir := t.TempDir()
	w, err := format.OpenWriter(dir, "shop", format.WithSync(format.SyncNone, 0))
	if err != nil {
		t.Fatal(err)
	}
	var pos []format.Position
	for i := 0; i < 10; i++ {
		p, err := w.Commit(&format.Tx{CommitTime: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC).UnixNano(), Changes: []format.Change{
			{Table: "orders", Op: format.OpUpsert, Key: []byte(fmt.Sprint(i)), After: []byte(`{"n":1}`)},
			{Table: "stock", Op: format.OpUpsert, Key: []byte(fmt.Sprint(i)), After: []byte(`{"q":2}`)},
		}})
		if err != nil {
			t.Fatal(err)
		}
		pos = append(pos, p)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	seg := filepath.Join(dir, format.SegmentName("shop", 1))
	fi, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	end := fi.Size()

	t.Run("DiskOnly", func(t *testing.T) {
		out, err := runCmd(t, "status", "--dir", dir, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var got struct{ Sources []shipper.Stages }
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if len(got.Sources) != 1 || got.Sources[0].OnDisk == nil {
			t.Fatalf("sources = %s, want shop on disk", out)
		}
		d := got.Sources[0].OnDisk
		if d.Segment != 1 || d.Offset != end || !d.LastCommit.Equal(time.Date(2026, 1, 1, 0, 0, 9, 0, time.UTC)) {
			t.Errorf("on disk = %+v, want 1:%d last commit 00:00:09", d, end)
		}
	})

	t.Run("Shipped", func(t *testing.T) {
		s := startJetStream(t)
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx := context.Background()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY", Subjects: []string{"ferry.>"}}); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		// Ship the first 6 transactions as one batch, as the shipper would.
		b := wire.Batch{Source: "shop", Segment: 1, From: pos[0].Offset, To: pos[6].Offset, Frames: 6, Changes: 12,
			FirstCommit: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), LastCommit: time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC).UnixNano(),
			Codec: wire.CodecNone, Parts: 1, PrevEnd: 0}
		b.RawLen = int(b.To - b.From)
		msg := &nats.Msg{Subject: "ferry.shop", Header: nats.Header(b.Header()), Data: raw[b.From:b.To]}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		out, err := runCmd(t, "status", "--dir", dir, "--nats", s.ClientURL(), "--json")
		if err != nil {
			t.Fatal(err)
		}
		var got struct{ Sources []shipper.Stages }
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		sh, lag := got.Sources[0].Shipped, got.Sources[0].ShipLag
		if sh == nil || sh.Segment != 1 || sh.Offset != pos[6].Offset || sh.StreamSeq != 1 {
			t.Fatalf("shipped = %+v, want 1:%d at sequence 1", sh, pos[6].Offset)
		}
		if lag == nil || lag.Records != 8 || lag.Bytes != end-pos[6].Offset || lag.Seconds != 4 {
			t.Errorf("ship lag = %+v, want 8 records, %d bytes, 4 s", lag, end-pos[6].Offset)
		}
		// A receiver applies the batch; status reads it from /v1/status.
		recv, err := receiver.New(receiver.WithNATS(nc), receiver.WithDataDir(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- recv.Run(rctx) }()
		defer func() { stop(); <-done }()
		api := httptest.NewServer(recv.Handler())
		defer api.Close()
		for deadline := time.Now().Add(10 * time.Second); recv.Positions()["shop"].Changes < 12; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the receiver did not apply the batch: %+v", recv.Status())
			}
		}
		out, err = runCmd(t, "status", "--dir", dir, "--nats", s.ClientURL(), "--receiver", api.URL, "--json")
		if err != nil {
			t.Fatal(err)
		}
		got.Sources = nil
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		ap, alag := got.Sources[0].Applied, got.Sources[0].ApplyLag
		if ap == nil || ap.Segment != 1 || ap.Offset != pos[6].Offset || !ap.LastCommit.Equal(time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)) {
			t.Fatalf("applied = %+v, want 1:%d last commit 00:00:05", ap, pos[6].Offset)
		}
		if alag == nil || alag.Records != 0 || alag.Bytes != 0 || alag.Seconds != 0 {
			t.Errorf("apply lag = %+v, want nothing behind the shipped stage", alag)
		}

		// The receiver's address without http:// is taken as http://.
		table, err := runCmd(t, "status", "--dir", dir, "--nats", s.ClientURL(), "--receiver", strings.TrimPrefix(api.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"SOURCE", "shop", "on disk", "shipped", "applied", fmt.Sprintf("1:%d", pos[6].Offset)} {
			if !strings.Contains(table, want) {
				t.Errorf("table lacks %q:\n%s", want, table)
			}
		}

		// --watch redraws the same figures with the receiver's gate, and
		// the rate of a stage that moves: the legacy writes more meanwhile.
		var buf syncBuffer
		wctx, wstop := context.WithCancel(ctx)
		wdone := make(chan error, 1)
		go func() {
			env := &Env{Stdin: strings.NewReader(""), Stdout: &buf, Stderr: io.Discard, Getenv: func(string) string { return "" }}
			wdone <- run(wctx, env, []string{"status", "--watch", "--interval", "200ms", "--dir", dir, "--nats", s.ClientURL(), "--receiver", api.URL})
		}()
		waitOut := func(what string, cond func(string) bool) string {
			t.Helper()
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if out := buf.String(); cond(out) {
					return out
				}
				if time.Now().After(deadline) {
					t.Fatalf("ferry status --watch never showed %s:\n%s", what, buf.String())
				}
			}
		}
		waitOut("a first frame", func(o string) bool { return strings.Contains(o, "applied") })
		for i := 10; i < 15; i++ {
			if _, err := w.Commit(&format.Tx{CommitTime: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC).UnixNano(), Changes: []format.Change{
				{Table: "orders", Op: format.OpUpsert, Key: []byte(fmt.Sprint(i)), After: []byte(`{"n":1}`)}}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		watched := waitOut("the on-disk stage moving", func(o string) bool {
			return regexp.MustCompile(`shop +on disk +1:\d+ +00:00:1\d\.000 .*B/s`).MatchString(o)
		})
		wstop()
		if err := <-wdone; err != nil {
			t.Fatalf("ferry status --watch: %v", err)
		}
		if n := strings.Count(watched, "ferry status  "); n < 2 {
			t.Errorf("%d frames, want several:\n%s", n, watched)
		}
		for _, want := range []string{"every 200ms (Ctrl-C to stop)", "gate: ", fmt.Sprintf("1:%d", pos[6].Offset)} {
			if !strings.Contains(watched, want) {
				t.Errorf("--watch output lacks %q:\n%s", want, watched)
			}
		}
		if strings.Contains(watched, "\x1b[") {
			t.Errorf("--watch drew ANSI codes into a pipe")
		}
	})

	// No flags: status reads the stream at --nats's shown default instead
	// of refusing (nothing listens there in a test, or a server without
	// the stream).
	t.Run("NoFlags", func(t *testing.T) {
		_, err := runCmd(t, "status")
		if err != nil && !strings.Contains(err.Error(), "127.0.0.1:4222") && !strings.Contains(err.Error(), "stream") {
			t.Errorf("ferry status with no flags: %v, want it to ask NATS at 127.0.0.1:4222", err)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		cases := []struct {
			name string
			args []string
			want string
		}{
			{"ReceiverBadScheme", []string{"status", "--receiver", "ftp://127.0.0.1:1"}, `want http or https`},
			{"NoDir", []string{"status", "--dir", filepath.Join(dir, "missing")}, "--dir"},
			{"NATSDown", []string{"status", "--nats", "nats://127.0.0.1:1", "--timeout", "2s"}, "NATS at nats://127.0.0.1:1"},
			{"ReceiverDown", []string{"status", "--receiver", "http://127.0.0.1:1"}, "ferry receive"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				_, err := runCmd(t, c.args...)
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("err = %v, want one mentioning %q", err, c.want)
				}
			})
		}
	})
}
