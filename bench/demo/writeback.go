package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/ferrysync/ferry/receiver/api"
)

// Write-back in the demo: a canary service (Canary) serves some users; the
// orders they place and cancel are not written by the service but sent to
// the legacy as commands through the receiver (POST /v1/commands). The
// inbox agent delivers them; the demo's legacy carries them out with a
// version check (the Go API, inbox.Consume) and writes the result into its
// change files with the command's origin and id, or a rejection with the
// reason; the confirmations come back through the stream like every other
// change, and the canary waits for them (GET /v1/commands/{id}?wait=).

// Canary is the origin of the demo's canary service.
const Canary = "canary"

// CanaryTable is the table the canary writes back.
const CanaryTable = "orders"

// WriteBack is what the write-back part of a run did and found.
type WriteBack struct {
	Submitted, Applied, Rejected int
	// Latency is submitted → applied by the legacy → confirmed by the
	// receiver, per applied or rejected command.
	Latency Quantiles
	// Problems are what the final verification found wrong (none: OK).
	Problems []string
}

// OK reports whether every command had exactly one outcome, everywhere.
func (w *WriteBack) OK() bool { return len(w.Problems) == 0 }

func (w *WriteBack) String() string {
	s := fmt.Sprintf("%d commands from the canary: %d applied, %d rejected", w.Submitted, w.Applied, w.Rejected)
	if w.Latency.Count > 0 {
		s += fmt.Sprintf("; submitted→applied→confirmed p50 %s, p99 %s, max %s", ms(w.Latency.P50), ms(w.Latency.P99), ms(w.Latency.Max))
	}
	return s
}

// legacyRecord is the demo legacy's record of a command (in a real legacy:
// a table written in the same transaction as the business write).
type legacyRecord struct {
	applied bool
	reason  string
}

// wbLegacy is the demo legacy's write-back side: it carries out commands
// on the rows the canary owns, under the legacy's one lock, with row
// versions of its own.
type wbLegacy struct {
	leg *legacy

	mu      sync.Mutex
	version uint64            // the last row version handed out
	rows    map[string]uint64 // canary rows: key -> version
	images  map[string][]byte // canary rows: key -> image
	records map[string]legacyRecord
}

func newWBLegacy(leg *legacy) *wbLegacy {
	return &wbLegacy{leg: leg, rows: map[string]uint64{}, images: map[string][]byte{}, records: map[string]legacyRecord{}}
}

// handle carries out an inbox file's commands (inbox.Handler).
func (l *wbLegacy) handle(_ context.Context, cmds []command.Command) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range cmds {
		c := &cmds[i]
		if _, done := l.records[c.ID]; done {
			continue // delivered again: carried out once
		}
		cur, exists := l.rows[c.Key]
		reason := ""
		switch {
		case c.Table != CanaryTable:
			reason = fmt.Sprintf("table %q is not written back by this legacy", c.Table)
		case c.Op == command.OpInsert && exists:
			reason = fmt.Sprintf("row exists at version %d", cur)
		case c.Op != command.OpInsert && !exists:
			reason = "row does not exist (deleted, or never inserted)"
		case c.Op != command.OpInsert && c.Version != 0 && c.Version != cur:
			reason = fmt.Sprintf("stale version: row at %d, command read %d", cur, c.Version)
		}
		if reason != "" {
			if _, err := l.leg.w.Reject(format.Rejection{Time: time.Now().UnixNano(), Command: c.ID, Origin: c.Origin, Reason: reason}); err != nil {
				return fmt.Errorf("demo: legacy rejecting command %s: %w", c.ID, err)
			}
			l.records[c.ID] = legacyRecord{reason: reason}
			continue
		}
		l.version++
		ch := format.Change{Table: c.Table, Key: []byte(c.Key), Version: l.version, Content: format.ContentJSON}
		switch c.Op {
		case command.OpInsert:
			ch.Op = format.OpInsert
		case command.OpDelete:
			ch.Op = format.OpDelete
		case command.OpUpsert:
			ch.Op = format.OpUpsert
		default:
			ch.Op = format.OpUpdate
		}
		if ch.Op != format.OpDelete {
			ch.After = c.After
		}
		tx := format.Tx{Origin: c.Origin, Command: c.ID, Changes: []format.Change{ch}}
		if err := l.leg.commit(&tx); err != nil {
			return err
		}
		if ch.Op == format.OpDelete {
			delete(l.rows, c.Key)
			delete(l.images, c.Key)
		} else {
			l.rows[c.Key] = l.version
			l.images[c.Key] = c.After
		}
		l.records[c.ID] = legacyRecord{applied: true}
	}
	return nil
}

// canary is the canary service: its users place orders and cancel some,
// through the receiver's API.
type canary struct {
	cl   *api.Client
	rate float64 // commands/s
	rng  *rand.Rand
	lat  latencies

	mu       sync.Mutex
	sent     map[string]api.CommandRequest
	outcomes map[string]api.CommandJSON
	placed   []string // applied orders not cancelled yet
	errs     []string
	wg       sync.WaitGroup
}

func newCanary(base string, rate float64, seed uint64) (*canary, error) {
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	cl, err := api.NewClient(base, "", hc)
	if err != nil {
		return nil, err
	}
	return &canary{cl: cl, rate: rate, rng: rand.New(rand.NewPCG(seed, 13)), sent: map[string]api.CommandRequest{}, outcomes: map[string]api.CommandJSON{}}, nil
}

// run places orders until ctx ends: each user places an order, and every
// fourth command cancels an earlier order at the version read from the
// receiver; now and then the same cancel follows again at that old
// version (a stale screen), which the legacy must refuse.
func (c *canary) run(ctx context.Context) {
	p := workload.NewPacer(c.rate)
	for n := 0; ctx.Err() == nil; n++ {
		if err := p.Wait(ctx, 1); err != nil {
			break
		}
		user := n % 50 // user 0 places the first order (the curl the demo suggests)
		c.mu.Lock()
		var key string
		if n%4 == 3 && len(c.placed) > 0 {
			key, c.placed = c.placed[0], c.placed[1:]
		}
		c.mu.Unlock()
		if key != "" {
			var row api.RowJSON
			if err := c.cl.Get(ctx, "/v1/tables/"+CanaryTable+"/rows/"+url.PathEscape(key), nil, &row); err != nil {
				c.fail(fmt.Sprintf("reading order %s before cancelling it: %v", key, err))
				continue
			}
			var img map[string]any
			if err := json.Unmarshal(row.Value, &img); err != nil {
				c.fail(fmt.Sprintf("order %s: %v", key, err))
				continue
			}
			img["status"] = "cancelled"
			after, _ := json.Marshal(img)
			id := "cancel-" + key
			c.submit(ctx, api.CommandRequest{ID: id, Table: CanaryTable, Key: key, Op: command.OpUpdate, After: after, Version: row.RowVersion})
			if n%8 == 7 {
				c.submit(ctx, api.CommandRequest{ID: id + "-again", Table: CanaryTable, Key: key, Op: command.OpUpdate,
					After: json.RawMessage(fmt.Sprintf(`{"status":"cancelled","note":"stale screen %d"}`, n)), Version: row.RowVersion})
			}
			continue
		}
		key = fmt.Sprintf("canary-u%02d-%06d", user, n)
		after := fmt.Sprintf(`{"customer":"canary-u%02d","sku":"SKU-%04d","qty":%d,"status":"placed"}`, user, c.rng.IntN(10000), 1+c.rng.IntN(5))
		c.submit(ctx, api.CommandRequest{ID: "order-" + key, Table: CanaryTable, Key: key, Op: command.OpInsert, After: json.RawMessage(after)})
	}
	c.wg.Wait()
}

// submit sends a command and waits for its outcome in the background (an
// applied order may be cancelled later).
func (c *canary) submit(ctx context.Context, req api.CommandRequest) {
	start := time.Now()
	if _, err := c.cl.SubmitCommand(ctx, req); err != nil {
		if ctx.Err() == nil {
			c.fail(fmt.Sprintf("submitting %s: %v", req.ID, err))
		}
		return
	}
	c.mu.Lock()
	c.sent[req.ID] = req
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		// The outcome is waited for even after ctx ended: the legacy
		// stops taking commands only once every command has one.
		wctx := context.WithoutCancel(ctx)
		deadline := time.Now().Add(time.Minute)
		for {
			out, err := c.cl.Command(wctx, req.ID, 10*time.Second)
			if err == nil && out.State != cmdPending {
				c.lat.add(time.Since(start))
				c.mu.Lock()
				c.outcomes[req.ID] = out
				if req.Op == command.OpInsert && out.State == "applied" {
					c.placed = append(c.placed, req.Key)
				}
				c.mu.Unlock()
				return
			}
			if time.Now().After(deadline) {
				c.fail(fmt.Sprintf("command %s has no outcome after a minute (%v)", req.ID, err))
				return
			}
			if err != nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
}

// cmdPending is the state of a command without an outcome yet.
const cmdPending = "pending"

func (c *canary) fail(s string) {
	c.mu.Lock()
	if len(c.errs) < 20 {
		c.errs = append(c.errs, s)
	}
	c.mu.Unlock()
}

// verify checks the write-backs at the end: every command the canary sent
// has exactly one outcome, the same at the receiver and in the legacy's
// record and change files; applied ones are in the legacy's rows and the
// receiver's; rejected ones are nowhere (the row holds another image).
func (c *canary) verify(ctx context.Context, l *wbLegacy, changesDir string) *WriteBack {
	c.mu.Lock()
	defer c.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	wb := &WriteBack{Submitted: len(c.sent), Latency: c.lat.quantiles(), Problems: append([]string(nil), c.errs...)}
	bad := func(f string, args ...any) {
		if len(wb.Problems) < 20 {
			wb.Problems = append(wb.Problems, fmt.Sprintf(f, args...))
		}
	}
	records, err := commandRecords(changesDir)
	if err != nil {
		bad("reading the change files for command records: %v", err)
	}
	for id, req := range c.sent {
		out, ok := c.outcomes[id]
		rec, inLegacy := l.records[id]
		n := records[id]
		switch {
		case !ok:
			bad("command %s has no outcome at the receiver", id)
			continue
		case !inLegacy:
			bad("command %s is %s at the receiver but the legacy has no record of it", id, out.State)
			continue
		case rec.applied != (out.State == "applied") || rec.reason != out.Reason:
			bad("command %s: %s %q at the receiver, the legacy says applied=%v %q", id, out.State, out.Reason, rec.applied, rec.reason)
		case rec.applied && (n.committed != 1 || n.rejected != 0):
			bad("applied command %s has %d transactions and %d rejections in the change files, want 1 and 0", id, n.committed, n.rejected)
		case !rec.applied && (n.committed != 0 || n.rejected != 1):
			bad("rejected command %s has %d transactions and %d rejections in the change files, want 0 and 1", id, n.committed, n.rejected)
		}
		var row api.RowJSON
		rerr := c.cl.Get(ctx, "/v1/tables/"+CanaryTable+"/rows/"+url.PathEscape(req.Key), nil, &row)
		var ae *api.Error
		if rerr != nil && !(errors.As(rerr, &ae) && ae.StatusCode == http.StatusNotFound) {
			bad("reading %s/%s: %v", CanaryTable, req.Key, rerr)
			continue
		}
		img, held := l.images[req.Key]
		switch {
		case held != (rerr == nil):
			bad("row %s/%s: in the legacy %v, at the receiver %v", CanaryTable, req.Key, held, rerr == nil)
		case held && (!sameJSON(img, row.Value) || l.rows[req.Key] != row.RowVersion):
			bad("row %s/%s: legacy %s at %d, receiver %s at %d", CanaryTable, req.Key, img, l.rows[req.Key], row.Value, row.RowVersion)
		case rec.applied:
			wb.Applied++
		default:
			wb.Rejected++
			if held && sameJSON(req.After, row.Value) {
				bad("rejected command %s: its image is in row %s/%s", id, CanaryTable, req.Key)
			}
		}
	}
	return wb
}

func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

type cmdRecords struct{ committed, rejected int }

// commandRecords counts, per command id, the committed transactions
// carrying it and the rejection frames naming it in the change files.
func commandRecords(dir string) (map[string]cmdRecords, error) {
	segs, err := format.ListSegments(dir, Source)
	if err != nil {
		return nil, err
	}
	out := map[string]cmdRecords{}
	var tx format.Tx
	for _, sf := range segs {
		rd, f, err := format.OpenReader(sf.Path, 0)
		if err != nil {
			return nil, err
		}
		for {
			fr, err := rd.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				f.Close()
				return nil, err
			}
			switch fr.Type {
			case format.FrameTx:
				if err := format.DecodeTx(fr.Payload, &tx); err != nil {
					f.Close()
					return nil, err
				}
				if tx.Command != "" {
					r := out[tx.Command]
					r.committed++
					out[tx.Command] = r
				}
			case format.FrameRejection:
				rj, err := format.DecodeRejection(fr.Payload)
				if err != nil {
					f.Close()
					return nil, err
				}
				r := out[rj.Command]
				r.rejected++
				out[rj.Command] = r
			}
		}
		f.Close()
	}
	return out, nil
}
