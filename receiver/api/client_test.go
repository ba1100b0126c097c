package api_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/store"
)

func TestParseBaseURL(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		{in: "http://127.0.0.1:8080/", want: "http://127.0.0.1:8080"},
		{in: "https://recv.example:443/ferry/", want: "https://recv.example:443/ferry"},
		{in: "127.0.0.1:28080", want: "http://127.0.0.1:28080"},
		{in: "localhost:8080", want: "http://localhost:8080"},
		{in: " 127.0.0.1:1 ", want: "http://127.0.0.1:1"},
		{in: "", err: "empty"},
		{in: "ftp://host:21", err: `scheme "ftp"`},
		{in: "http://", err: "no host"},
		{in: "http://h:1/?x=1", err: "without a query"},
		{in: "http://[::1", err: "want http://HOST:PORT"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := api.ParseBaseURL(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseBaseURL(%q) = %q, %v; want an error containing %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseBaseURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

// TestClientStatus reads the handler's own status document back through the
// client: every field survives, the token is sent, and errors carry the
// API's code.
func TestClientStatus(t *testing.T) {
	st, err := store.Open("db", store.WithFS(vfs.NewMem()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	commit := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	hook := uint64(7)
	want := api.Status{Stream: "S", Consuming: true, CaughtUp: true, Ready: false, NotReadyReason: "lagging",
		StreamSeq: 42, MessagesPending: 3, FirstChangeID: 1, LastChangeID: 9, WebhookChangeID: &hook,
		Sources: []api.SourceStatus{{Source: "shop", State: "ok", AppliedSegment: 2, AppliedOffset: 4096,
			ShippedSegment: 2, ShippedOffset: 5000, BehindBytes: 904, Pending: true, StreamSeq: 41,
			LastCommitTime: &commit, AliveAt: &commit, LagSeconds: 1.5, Transactions: 5, Changes: 9}}}
	h, err := api.New(api.Config{Store: st, Status: func() api.Status { return want }, Token: "sekrit"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ctx := context.Background()

	c, err := api.NewClient(strings.TrimPrefix(srv.URL, "http://"), "sekrit", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Status() = %+v\nwant %+v", got, want)
	}

	bad, err := api.NewClient(srv.URL, "wrong", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Status(ctx)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusUnauthorized || ae.Code != "unauthorized" {
		t.Fatalf("Status() with a wrong token: %v, want an *api.Error 401 unauthorized", err)
	}
}

// TestClientNotAReceiver: a server that answers something else is reported
// as such, and a huge answer is not buffered whole.
func TestClientNotAReceiver(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("big") != "" {
			chunk := make([]byte, 1<<20)
			for i := 0; i <= api.MaxResponseBytes>>20; i++ {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			return
		}
		w.Write([]byte("<html>hello</html>"))
	}))
	t.Cleanup(srv.Close)
	c, err := api.NewClient(srv.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "is this a Ferry receiver?") {
		t.Errorf("Status() from a web page: %v", err)
	}
	var v any
	if err := c.Get(context.Background(), "/x", map[string][]string{"big": {"1"}}, &v); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Get() of a huge answer: %v, want an error saying it is larger than the bound", err)
	}
}
