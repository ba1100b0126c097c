package writeback_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/receiver/api"
)

// TestWriteBack runs the circular path end to end: services submit
// commands to their receivers, the agent delivers them to the inbox, the
// PostgreSQL applier carries them out or refuses them and records the
// outcome in the change files, which come back to every receiver.
func TestWriteBack(t *testing.T) {
	rg := newRig(t, false, "svc-a", "svc-b")
	a, b := rg.svcs["svc-a"], rg.svcs["svc-b"]
	ctx := context.Background()
	for i := range 10 {
		if _, err := rg.ap.Write(ctx, table, fmt.Sprintf("k%d", i), []byte(fmt.Sprintf(`{"balance":%d}`, i*100))); err != nil {
			t.Fatal(err)
		}
	}
	rg.equalToDB(t)

	t.Run("AppliedAndReadYourWrites", func(t *testing.T) {
		v := rg.version(t, "k1")
		code, out := a.submit(t, api.CommandRequest{ID: "a-1", Table: table, Key: "k1", Op: "update", After: json.RawMessage(`{"balance": 150}`), Version: v})
		if code != http.StatusAccepted || out["id"] != "a-1" {
			t.Fatalf("POST: %d %v", code, out)
		}
		c := a.wait(t, "a-1")
		if c.State != "applied" || c.Version <= v || c.Source != source || c.Segment == 0 {
			t.Fatalf("outcome %+v, want applied at a version above %d", c, v)
		}
		// Read-your-writes: once applied, this receiver's row shows it.
		row, ok, err := a.r.Store().Get(table, []byte("k1"))
		if err != nil || !ok || canon(t, row.Value) != `{"balance":150}` {
			t.Fatalf("row k1 after applied: %q %v %v", row.Value, ok, err)
		}
		// The same id again is the same command: not carried out twice.
		code, out = a.submit(t, api.CommandRequest{ID: "a-1", Table: table, Key: "k1", Op: "update", After: json.RawMessage(`{"balance": 150}`), Version: v})
		if code != http.StatusAccepted || out["state"] != "applied" {
			t.Fatalf("resubmission: %d %v", code, out)
		}
		if got := rg.version(t, "k1"); got != c.Version {
			t.Fatalf("row k1 at version %d after a resubmission, want %d", got, c.Version)
		}
		// The same id for another command is refused.
		code, out = a.submit(t, api.CommandRequest{ID: "a-1", Table: table, Key: "k2", Op: "update", After: json.RawMessage(`{}`), Version: v})
		if code != http.StatusConflict {
			t.Fatalf("same id, other command: %d %v", code, out)
		}
		// The other service's receiver knows the outcome too.
		if c := b.wait(t, "a-1"); c.State != "applied" {
			t.Fatalf("svc-b sees a-1 as %+v", c)
		}
	})

	t.Run("ConcurrentWritersOneWins", func(t *testing.T) {
		v := rg.version(t, "k2")
		var wg sync.WaitGroup
		for i, s := range []*service{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, out := s.submit(t, api.CommandRequest{ID: fmt.Sprintf("race-%d", i), Table: table, Key: "k2", Op: "update",
					After: json.RawMessage(fmt.Sprintf(`{"balance":%d}`, 1000+i)), Version: v})
				if code != http.StatusAccepted {
					t.Errorf("POST: %d %v", code, out)
				}
			}()
		}
		wg.Wait()
		c0, c1 := a.wait(t, "race-0"), b.wait(t, "race-1")
		win, lose := c0, c1
		if c1.State == "applied" {
			win, lose = c1, c0
		}
		if win.State != "applied" || lose.State != "rejected" {
			t.Fatalf("outcomes %s and %s, want one applied and one rejected", c0.State, c1.State)
		}
		if want := fmt.Sprintf("stale version: row at %d, command read %d", win.Version, v); lose.Reason != want {
			t.Fatalf("rejection reason %q, want %q", lose.Reason, want)
		}
		rg.equalToDB(t)
	})

	t.Run("DeletedRowNotResurrected", func(t *testing.T) {
		v := rg.version(t, "k3")
		if code, out := a.submit(t, api.CommandRequest{ID: "del-3", Table: table, Key: "k3", Op: "delete", Version: v}); code != http.StatusAccepted {
			t.Fatalf("POST: %d %v", code, out)
		}
		if c := a.wait(t, "del-3"); c.State != "applied" {
			t.Fatalf("delete: %+v", c)
		}
		b.submit(t, api.CommandRequest{ID: "upd-3", Table: table, Key: "k3", Op: "update", After: json.RawMessage(`{"balance":1}`), Version: v})
		c := b.wait(t, "upd-3")
		if c.State != "rejected" || !strings.Contains(c.Reason, "does not exist") {
			t.Fatalf("update of a deleted row: %+v", c)
		}
		if _, ok := rg.dbRows(t)["k3"]; ok {
			t.Fatal("k3 is back in the database")
		}
		rg.equalToDB(t)
	})

	t.Run("HotRows", func(t *testing.T) {
		// 8 writers on 3 rows, each reading the version from the database
		// and writing it back: every command ends applied or rejected,
		// once, and the receivers end equal to the database.
		var wg sync.WaitGroup
		var mu sync.Mutex
		ids := map[string]*service{}
		for w := range 8 {
			s := a
			if w%2 == 1 {
				s = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 25 {
					key := fmt.Sprintf("k%d", 4+(w+i)%3)
					id := fmt.Sprintf("hot-%d-%d", w, i)
					code, out := s.submit(t, api.CommandRequest{ID: id, Table: table, Key: key, Op: "update",
						After: json.RawMessage(fmt.Sprintf(`{"balance":%d,"by":"%s"}`, i, id)), Version: rg.version(t, key)})
					if code != http.StatusAccepted {
						t.Errorf("POST %s: %d %v", id, code, out)
						return
					}
					mu.Lock()
					ids[id] = s
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		applied := 0
		states := map[string]string{}
		for id, s := range ids {
			c := s.wait(t, id)
			if c.State == "applied" {
				applied++
			}
			states[id] = c.State
		}
		db := rg.commandsInDB(t)
		for id, st := range states {
			if db[id] != st {
				t.Errorf("command %s: receiver says %s, database %q", id, st, db[id])
			}
		}
		if applied == 0 {
			t.Fatal("no hot-row command applied")
		}
		rg.equalToDB(t)
		t.Logf("%d of %d hot-row commands applied", applied, len(ids))
	})

	t.Run("Batch", func(t *testing.T) {
		// POST /v1/commands with an array: bad elements refuse the batch
		// whole, each named with its index and reason, and nothing of it
		// is recorded or sent; a good batch is taken in order, and its
		// outcomes come back through GET /v1/commands?ids=. Two services
		// batch-update the same rows at the same version: for each row one
		// command is applied, the other refused, whatever the batching.
		before := rg.commandsInStream(t)
		body := `[{"id":"bb-ok","table":"accounts","key":"bb0","op":"insert","after":{"n":0}},
			{"id":"bb-1","table":"nope","key":"k","op":"insert","after":{}},
			{"id":"../x","table":"accounts","key":"k","op":"insert","after":{}},
			{"id":"bb-3","table":"accounts","key":"k","op":"update","after":{}},
			{"id":"bb-ok","table":"accounts","key":"bb0","op":"insert","after":{"n":0}},
			{"id":"bb-5","table":"accounts","key":"k","op":"insert","after":{},"extra":1}]`
		code, out := a.post(t, []byte(body))
		if code != http.StatusBadRequest || out["code"] != "batch_refused" {
			t.Fatalf("batch with bad elements: %d %v, want 400 batch_refused", code, out)
		}
		type elem struct {
			Index  int    `json:"index"`
			Status int    `json:"status"`
			Code   string `json:"code"`
			Error  string `json:"error"`
		}
		var got []elem
		raw, _ := json.Marshal(out["errors"])
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		want := []elem{{Index: 1, Code: "unknown_table"}, {Index: 2, Code: "invalid_id"}, {Index: 3, Code: "invalid_command"},
			{Index: 4, Code: "duplicate_id"}, {Index: 5, Code: "bad_request"}}
		if len(got) != len(want) {
			t.Fatalf("errors %+v, want one per bad element: %+v", got, want)
		}
		for i := range want {
			if got[i].Index != want[i].Index || got[i].Code != want[i].Code || got[i].Status != http.StatusBadRequest || got[i].Error == "" {
				t.Errorf("error %d: %+v, want index %d code %s status 400 with a message", i, got[i], want[i].Index, want[i].Code)
			}
		}
		if after := rg.commandsInStream(t); after != before {
			t.Fatalf("a refused batch reached the commands stream: %d messages, %d before", after, before)
		}
		cl, err := api.NewClient(a.url, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if cs, err := cl.Commands(ctx, []string{"bb-ok"}, 0); err != nil || len(cs) != 1 || cs[0].State != api.StateUnknown {
			t.Fatalf("bb-ok after a refused batch: %+v %v, want unknown (not recorded)", cs, err)
		}
		for _, tc := range []struct {
			name, body, code string
			status           int
		}{
			{"Empty", `[]`, "bad_request", 400},
			{"NotAnArray", `[{"id":"x"`, "bad_request", 400},
			{"TooMany", "[" + strings.Repeat(`{},`, api.MaxCommandBatch) + "{}]", "too_large", 413},
		} {
			if code, out := a.post(t, []byte(tc.body)); code != tc.status || out["code"] != tc.code {
				t.Errorf("%s: %d %v, want %d %s", tc.name, code, out, tc.status, tc.code)
			}
		}

		// Inserts of new rows, then updates of them at the version read
		// from two services at once.
		var reqs []api.CommandRequest
		var ids []string
		for i := range 50 {
			id := fmt.Sprintf("bi-%d", i)
			reqs = append(reqs, api.CommandRequest{ID: id, Table: table, Key: fmt.Sprintf("b%d", i), Op: "insert", After: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
			ids = append(ids, id)
		}
		cs, err := cl.SubmitCommands(ctx, reqs)
		if err != nil || len(cs) != len(reqs) {
			t.Fatalf("SubmitCommands: %d statuses, %v", len(cs), err)
		}
		for i, c := range cs {
			if c.ID != ids[i] || c.State != "pending" && c.State != "applied" {
				t.Fatalf("status %d: %+v, want %s", i, c, ids[i])
			}
		}
		cs = waitAll(t, cl, ids)
		for _, c := range cs {
			if c.State != "applied" {
				t.Fatalf("insert %s: %+v", c.ID, c)
			}
		}
		// A resubmission of the same batch is the same commands; one id
		// reused for another command refuses the batch whole (409).
		if again, err := cl.SubmitCommands(ctx, reqs); err != nil || again[7].State != "applied" {
			t.Fatalf("resubmitted batch: %v %+v", err, again)
		}
		reuse := append([]api.CommandRequest{{ID: "bb-new", Table: table, Key: "bx", Op: "insert", After: json.RawMessage(`{}`)}}, reqs[3])
		reuse[1].Key = "other"
		var ae *api.Error
		if _, err := cl.SubmitCommands(ctx, reuse); !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict || len(ae.Commands) != 1 || ae.Commands[0].Index != 1 {
			t.Fatalf("batch reusing an id: %v, want 409 naming element 1", err)
		}
		if cs, _ := cl.Commands(ctx, []string{"bb-new"}, 0); cs[0].State != api.StateUnknown {
			t.Fatalf("bb-new of a refused batch: %+v, want unknown", cs[0])
		}
		db := rg.dbRows(t)
		var wg sync.WaitGroup
		race := map[string][]string{} // key -> its two command ids
		for si, s := range []*service{a, b} {
			var reqs []api.CommandRequest
			for i := range 50 {
				key := fmt.Sprintf("b%d", i)
				id := fmt.Sprintf("bu-%d-%d", si, i)
				race[key] = append(race[key], id)
				reqs = append(reqs, api.CommandRequest{ID: id, Table: table, Key: key, Op: "update",
					After: json.RawMessage(fmt.Sprintf(`{"n":%d,"by":%d}`, i, si)), Version: db[key].version})
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl, _ := api.NewClient(s.url, "", nil)
				if _, err := cl.SubmitCommands(ctx, reqs); err != nil {
					t.Errorf("service %d: %v", si, err)
				}
			}()
		}
		wg.Wait()
		clB, _ := api.NewClient(b.url, "", nil)
		var all []string
		for _, two := range race {
			all = append(all, two...)
		}
		outcome := map[string]string{}
		for _, c := range waitAll(t, cl, all) { // svc-a knows svc-b's outcomes too
			outcome[c.ID] = c.State
		}
		for _, c := range waitAll(t, clB, all) {
			if outcome[c.ID] != c.State {
				t.Errorf("%s: svc-a says %s, svc-b %s", c.ID, outcome[c.ID], c.State)
			}
		}
		inDB := rg.commandsInDB(t)
		for key, two := range race {
			if n := btoi(outcome[two[0]] == "applied") + btoi(outcome[two[1]] == "applied"); n != 1 {
				t.Errorf("row %s: %s %s and %s %s, want exactly one applied", key, two[0], outcome[two[0]], two[1], outcome[two[1]])
			}
			for _, id := range two {
				if inDB[id] != outcome[id] {
					t.Errorf("%s: receivers say %s, database %q", id, outcome[id], inDB[id])
				}
			}
		}
		rg.equalToDB(t)
	})

	t.Run("BadInput", func(t *testing.T) {
		before := rg.commandsInStream(t)
		big := `{"x":"` + strings.Repeat("a", 70<<10) + `"}`
		for _, tc := range []struct {
			name string
			body string
			code int
			err  string
		}{
			{"UnknownTable", `{"id":"bad-1","table":"nope","key":"k","op":"update","after":{},"version":1}`, 400, "unknown_table"},
			{"MalformedID", `{"id":"../x","table":"accounts","key":"k","op":"update","after":{},"version":1}`, 400, "invalid_id"},
			{"EmptyID", `{"table":"accounts","key":"k","op":"update","after":{},"version":1}`, 400, "invalid_id"},
			{"OversizedImage", `{"id":"bad-2","table":"accounts","key":"k","op":"update","after":` + big + `,"version":1}`, 413, "too_large"},
			{"UpdateWithoutVersion", `{"id":"bad-3","table":"accounts","key":"k","op":"update","after":{}}`, 400, "invalid_command"},
			{"BadOp", `{"id":"bad-4","table":"accounts","key":"k","op":"merge","after":{}}`, 400, "invalid_command"},
			{"NotJSON", `{"id":`, 400, "bad_request"},
			{"UnknownField", `{"id":"bad-5","table":"accounts","key":"k","op":"insert","after":{},"extra":1}`, 400, "bad_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, out := a.post(t, []byte(tc.body))
				if code != tc.code || out["code"] != tc.err {
					t.Fatalf("%d %v, want %d %s", code, out, tc.code, tc.err)
				}
			})
		}
		if after := rg.commandsInStream(t); after != before {
			t.Fatalf("bad input reached the commands stream: %d messages, %d before", after, before)
		}
	})

	t.Run("NoEchoWebhook", func(t *testing.T) {
		// svc-a's webhook gets every change but svc-a's own, each with
		// its origin and command id; svc-b's gets svc-a's.
		for _, tc := range []struct {
			s          *service
			own, other string
		}{{a, "svc-a", "svc-b"}, {b, "svc-b", "svc-a"}} {
			want := map[uint64]api.ChangeJSON{}
			for _, c := range changesOf(t, tc.s.url) {
				if c.Origin != tc.own {
					want[c.ID] = c
				}
			}
			deadline := time.Now().Add(time.Minute)
			for {
				got := map[uint64]api.ChangeJSON{}
				for _, c := range tc.s.webhook() {
					if c.Origin == tc.own {
						t.Fatalf("%s's webhook echoes its own change %+v", tc.own, c)
					}
					got[c.ID] = c
				}
				missing := 0
				for id, w := range want {
					if g, ok := got[id]; !ok || g.Origin != w.Origin || g.Command != w.Command {
						missing++
					}
				}
				if missing == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s's webhook lacks %d of %d changes", tc.own, missing, len(want))
				}
				time.Sleep(20 * time.Millisecond)
			}
			sawOther := false
			for _, w := range want {
				sawOther = sawOther || (w.Origin == tc.other && w.Command != "")
			}
			if !sawOther {
				t.Fatalf("%s's webhook carries no change of %s with its command id", tc.own, tc.other)
			}
		}
	})

	t.Run("StatusAndMetrics", func(t *testing.T) {
		// Every command svc-a submitted has its outcome: none pending,
		// the applied and rejected counts add up to what it sent, in
		// /v1/status and in /metrics.
		sent := map[string]bool{}
		for _, c := range changesOf(t, a.url) {
			if c.Origin == "svc-a" {
				sent[c.Command] = true
			}
		}
		st := a.r.Status()
		cs := st.Commands
		if cs == nil || cs.Pending != 0 || cs.Applied < uint64(len(sent)) || cs.Rejected == 0 || len(cs.Recent) == 0 || cs.LatencyP99Seconds <= 0 {
			t.Fatalf("svc-a's command status %+v; want none pending, at least %d applied, some rejected, recent ones, a latency", cs, len(sent))
		}
		resp, err := http.Get(a.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			"ferry_receiver_commands_pending 0",
			fmt.Sprintf("ferry_receiver_commands_total{outcome=\"applied\"} %d", cs.Applied),
			fmt.Sprintf("ferry_receiver_commands_total{outcome=\"rejected\"} %d", cs.Rejected),
			"ferry_receiver_commands_oldest_pending_seconds 0",
		} {
			if !strings.Contains(string(body), want+"\n") {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})

	t.Run("NoEcho", func(t *testing.T) {
		// svc-a's feed leaves out svc-a's own write-backs and carries
		// svc-b's; every change carries its origin and command.
		evs := readSSE(t, a.url, "svc-a")
		sawB := false
		for _, e := range evs {
			if e.Origin == "svc-a" {
				t.Fatalf("svc-a's feed echoes its own change %+v", e)
			}
			if e.Origin == "svc-b" {
				sawB = sawB || e.Command != ""
			}
		}
		if !sawB {
			t.Fatalf("svc-a's feed has no change of svc-b: %d events", len(evs))
		}
	})
}

// waitAll waits (GET /v1/commands?ids=) until every command of ids has an
// outcome and returns their statuses.
func waitAll(t *testing.T, cl *api.Client, ids []string) []api.CommandJSON {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cs, err := cl.Commands(context.Background(), ids, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		pending := 0
		for i, c := range cs {
			if c.ID != ids[i] {
				t.Fatalf("status %d is of %s, want %s", i, c.ID, ids[i])
			}
			if c.State == "pending" || c.State == api.StateUnknown {
				pending++
			}
		}
		if pending == 0 {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d commands still without an outcome", pending, len(ids))
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
