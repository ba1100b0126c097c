package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/store"
)

func newServer(t *testing.T, changes []format.Change) (*httptest.Server, *store.Store) {
	t.Helper()
	st, err := store.Open("db", store.WithFS(vfs.NewMem()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := st.NewBatch()
	defer b.Close()
	off := int64(40)
	for i := range changes {
		tx := &format.Tx{CommitTime: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano(), ID: "T1", Origin: "svc",
			Changes: changes[i : i+1]}
		frame, err := format.AppendTx(nil, tx)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.ApplyTx("src", 1, off, off+int64(len(frame)), 1, tx, frame); err != nil {
			t.Fatal(err)
		}
		off += int64(len(frame))
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	h, err := api.New(api.Config{Store: st, Status: func() api.Status { return api.Status{Ready: false, NotReadyReason: "testing"} }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, st
}

func get(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("GET %s: not JSON: %q", url, body)
	}
	return resp.StatusCode, m
}

func TestRowRendering(t *testing.T) {
	srv, _ := newServer(t, []format.Change{
		{Table: "t", Op: format.OpInsert, Key: []byte("json"), After: []byte(`{"a":[1,2]}`)},
		{Table: "t", Op: format.OpInsert, Key: []byte("badjson"), After: []byte(`{"a":`)},
		{Table: "t", Op: format.OpInsert, Key: []byte("text"), After: []byte("héllo"), Content: format.ContentText},
		{Table: "t", Op: format.OpUpdate, Key: []byte{0xff, 0xfe}, After: []byte(`1`), Before: []byte(`0`)},
	})
	tests := []struct {
		path, encoding, value, contentType string
	}{
		{"/v1/tables/t/rows/json", "json", `{"a":[1,2]}`, "application/json"},
		{"/v1/tables/t/rows/badjson", "base64", `"eyJhIjo="`, "application/json"},
		{"/v1/tables/t/rows/text", "base64", `"aMOpbGxv"`, "text/plain; charset=utf-8"},
		{"/v1/tables/t/rows/%FF%FE", "json", `1`, "application/json"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var row api.RowJSON
			if err := json.NewDecoder(resp.Body).Decode(&row); err != nil || resp.StatusCode != 200 {
				t.Fatalf("%s: %v", resp.Status, err)
			}
			if row.Encoding != tc.encoding || string(row.Value) != tc.value || row.ContentType != tc.contentType {
				t.Fatalf("got encoding %s value %s type %s", row.Encoding, row.Value, row.ContentType)
			}
			if row.CommitTime.Format(time.RFC3339Nano) != "2026-01-02T03:04:05.000000006Z" || row.Version.Source != "src" {
				t.Fatalf("row %+v", row)
			}
		})
	}
	_, m := get(t, srv.URL+"/v1/tables/t/rows?prefix=%FF")
	rows := m["rows"].([]any)
	if len(rows) != 1 || rows[0].(map[string]any)["key_base64"] != "//4=" {
		t.Fatalf("binary key scan: %v", m)
	}
	_, m = get(t, srv.URL+"/v1/changes?after=3")
	c := m["changes"].([]any)[0].(map[string]any)
	if c["tx_id"] != "T1" || c["origin"] != "svc" || c["before"] != 0.0 || c["after"] != 1.0 || c["op"] != "update" {
		t.Fatalf("change %v", c)
	}
}

func TestErrors(t *testing.T) {
	srv, st := newServer(t, []format.Change{
		{Table: "t", Op: format.OpInsert, Key: []byte("a"), After: []byte(`1`)},
		{Table: "t", Op: format.OpInsert, Key: []byte("b"), After: []byte(`2`)},
	})
	tests := []struct {
		path   string
		status int
		code   string
	}{
		{"/v1/tables/t/rows/zzz", 404, "not_found"},
		{"/v1/tables/t/rows?limit=0", 400, "bad_request"},
		{"/v1/tables/t/rows?limit=1001", 400, "bad_request"},
		{"/v1/changes?limit=10001", 400, "bad_request"},
		{"/v1/changes?after=-1", 400, "bad_request"},
		{"/v1/changes/stream?after=abc", 400, "bad_request"},
		{"/readyz", 503, "not_ready"},
		{"/v2/anything", 404, "not_found"},
	}
	for _, tc := range tests {
		status, m := get(t, srv.URL+tc.path)
		if status != tc.status || m["code"] != tc.code || m["error"] == "" {
			t.Errorf("%s: %d %v, want %d %s", tc.path, status, m, tc.status, tc.code)
		}
	}
	// A cursor older than the log answers 410, for pages and for SSE.
	st.Trim(0, time.Nanosecond, ^uint64(0))
	if status, m := get(t, srv.URL+"/v1/changes?after=0"); status != 410 || m["code"] != "trimmed" {
		t.Errorf("trimmed page: %d %v", status, m)
	}
	if status, m := get(t, srv.URL+"/v1/changes/stream?after=0"); status != 410 || m["code"] != "trimmed" {
		t.Errorf("trimmed stream: %d %v", status, m)
	}
}

// Keys are taken from the path as sent: slashes, dot segments and empty
// segments belong to the key, raw or percent-encoded, and nothing is cleaned
// or redirected to another row.
func TestKeysTakenAsGiven(t *testing.T) {
	srv, _ := newServer(t, []format.Change{
		{Table: "t", Op: format.OpInsert, Key: []byte("b"), After: []byte(`"b"`)},
		{Table: "t", Op: format.OpInsert, Key: []byte("a/../b"), After: []byte(`"a/../b"`)},
		{Table: "t", Op: format.OpInsert, Key: []byte("a//c"), After: []byte(`"a//c"`)},
		{Table: "t", Op: format.OpInsert, Key: []byte("./x"), After: []byte(`"./x"`)},
		{Table: "t/u", Op: format.OpInsert, Key: []byte("k"), After: []byte(`"t/u k"`)},
	})
	tests := []struct {
		path   string
		status int
		value  string
	}{
		{"/v1/tables/t/rows/b", 200, `"b"`},
		{"/v1/tables/t/rows/a/../b", 200, `"a/../b"`},
		{"/v1/tables/t/rows/a%2F..%2Fb", 200, `"a/../b"`},
		{"/v1/tables/t/rows/a%2F%2E%2E%2Fb", 200, `"a/../b"`},
		{"/v1/tables/t/rows/a//c", 200, `"a//c"`},
		{"/v1/tables/t/rows/./x", 200, `"./x"`},
		{"/v1/tables/t/rows/x/../b", 404, ""},
		{"/v1/tables/t/rows/a/./b", 404, ""},
		{"/v1/tables/t/rows//b", 404, ""},
		{"/v1/tables/t%2Fu/rows/k", 200, `"t/u k"`},
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := client.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.status)
			}
			if tc.status != 200 {
				return
			}
			var row api.RowJSON
			if err := json.Unmarshal(body, &row); err != nil {
				t.Fatal(err)
			}
			if got := string(row.Value); got != tc.value {
				t.Fatalf("value %s, want %s", got, tc.value)
			}
		})
	}
	// A page lists the keys as stored and its next_url leads on from them.
	_, m := get(t, srv.URL+"/v1/tables/t/rows?limit=2&after=.%2Fx")
	rows := m["rows"].([]any)
	if len(rows) != 2 || rows[0].(map[string]any)["key"] != "a/../b" || rows[1].(map[string]any)["key"] != "a//c" {
		t.Fatalf("page after ./x: %v", m)
	}
}

// A change cursor at the largest id is past any log: an empty page, not an
// overflow into "trimmed".
func TestCursorAtMaxID(t *testing.T) {
	srv, _ := newServer(t, []format.Change{{Table: "t", Op: format.OpInsert, Key: []byte("a"), After: []byte(`1`)}})
	status, m := get(t, srv.URL+"/v1/changes?after=18446744073709551615")
	if status != 200 || len(m["changes"].([]any)) != 0 || m["next"] != 18446744073709551615.0 {
		t.Fatalf("after=2^64-1: %d %v", status, m)
	}
	if status, m := get(t, srv.URL+"/v1/changes?after=18446744073709551616"); status != 400 {
		t.Fatalf("after=2^64: %d %v", status, m)
	}
	resp, err := http.Get(srv.URL + "/v1/changes/stream?after=18446744073709551615")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream after=2^64-1: %s", resp.Status)
	}
}

// peakHeap samples the live heap (as of the last collection) while f runs
// and returns the highest value seen above the value before.
func peakHeap(f func()) int64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	read := func() int64 { metrics.Read(sample); return int64(sample[0].Value.Uint64()) }
	base := read()
	var peak atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if v := read(); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	f()
	close(stop)
	<-done
	return max(peak.Load(), read()) - base
}

// Pages of rows and changes end at a byte bound, whatever the limit asks,
// and following them still reads every row and change exactly once.
func TestPagesBoundedByBytes(t *testing.T) {
	const n, size = 10, 2 << 20
	var changes []format.Change
	for i := range n {
		v := append(append([]byte(`"`), bytes.Repeat([]byte{'a' + byte(i)}, size)...), '"')
		changes = append(changes, format.Change{Table: "t", Op: format.OpInsert, Key: []byte(fmt.Sprintf("k%02d", i)), After: v})
	}
	srv, _ := newServer(t, changes)
	fetch := func(url string) (body []byte) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if body, err = io.ReadAll(resp.Body); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s %v", url, resp.Status, err)
		}
		return body
	}
	t.Run("Rows", func(t *testing.T) {
		var got []string
		var pageRows []int
		url := srv.URL + "/v1/tables/t/rows?limit=100"
		var biggest int
		peak := peakHeap(func() {
			for url != "" {
				body := fetch(url)
				biggest = max(biggest, len(body))
				var page struct {
					Rows    []api.RowJSON
					More    bool
					NextURL string `json:"next_url"`
				}
				if err := json.Unmarshal(body, &page); err != nil {
					t.Fatal(err)
				}
				for _, r := range page.Rows {
					if len(r.Value) != size+2 {
						t.Fatalf("row %s: %d bytes", r.Key, len(r.Value))
					}
					got = append(got, r.Key)
				}
				pageRows = append(pageRows, len(page.Rows))
				url = ""
				if page.More {
					url = srv.URL + page.NextURL
				}
			}
		})
		t.Logf("%d rows of 2 MiB, limit=100: pages of %v rows, largest response %d MiB, live heap peak %.0f MiB above the start",
			n, pageRows, biggest>>20, float64(peak)/(1<<20))
		if len(got) != n {
			t.Fatalf("read %d rows, want %d: %v", len(got), n, got)
		}
		for i, k := range got {
			if k != fmt.Sprintf("k%02d", i) {
				t.Fatalf("row %d is %s", i, k)
			}
		}
		if biggest > 4<<20+2*size { // api.MaxPageBytes and a row
			t.Fatalf("a page of %d bytes, over the bound %d plus a row", biggest, api.MaxPageBytes)
		}
	})
	t.Run("Changes", func(t *testing.T) {
		after, read, pages, biggest := 0.0, 0, 0, 0
		for {
			body := fetch(fmt.Sprintf("%s/v1/changes?after=%d&limit=10000", srv.URL, uint64(after)))
			biggest = max(biggest, len(body))
			var page struct {
				Changes []api.ChangeJSON
				Next    float64
			}
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatal(err)
			}
			if len(page.Changes) == 0 {
				break
			}
			for _, c := range page.Changes {
				if c.ID != uint64(read+1) || len(c.After) != size+2 {
					t.Fatalf("change %d: id %d, %d bytes", read+1, c.ID, len(c.After))
				}
				read++
			}
			pages++
			after = page.Next
		}
		t.Logf("%d changes of 2 MiB, limit=10000: %d pages, largest response %d MiB", n, pages, biggest>>20)
		if read != n || biggest > 4<<20+2*size {
			t.Fatalf("read %d changes, largest page %d bytes", read, biggest)
		}
	})
}
