package demo

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/shipper/load"
)

// The roll-out (format/SPEC.md section 24.4): the legacy's existing rows are
// in its database, not in its change files. The demo reads the mark (as
// `ferry load mark` does), then takes a JSON lines dump of every table,
// then lets the legacy write while each dump is loaded with that mark (as
// `ferry load --jsonl` does, through package shipper/load); the receiver's
// gate (--wait-load) stays closed until every load is done.

// loadChunkRows makes a demo-sized table several chunks, so that its
// progress shows and live changes land between its chunks.
const loadChunkRows = 5000

// dump is one table's dump file.
type dump struct {
	table string
	key   []string // key columns, key order
	path  string
	rows  int
}

// command is the `ferry load` command line that loads d, as the demo does.
func (d dump) command(natsURL string, mark uint64) string {
	return fmt.Sprintf("ferry load --nats %s --jsonl %s --table %s --key %s --mark %d --chunk-rows %d",
		natsURL, d.path, d.table, strings.Join(d.key, ","), mark, loadChunkRows)
}

// writeDumps writes the workload's initial rows, one JSON lines dump per
// table under dir: each line a row's image as the change files render it
// (row.AppendJSON), whose key columns are fields the loader joins with "/"
// into the change files' key (row.AppendKey). It returns the dumps and the
// same rows as the verification's base rows: table, key, image.
func writeDumps(dir string, ws *workload.Stream) ([]dump, map[string]map[string][]byte, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("demo: creating the dump directory: %w", err)
	}
	var dumps []dump
	base := map[string]map[string][]byte{}
	for _, tr := range ws.Initial() {
		t := tr.Table
		d := dump{table: t.Name, path: filepath.Join(dir, t.Name+".jsonl"), rows: len(tr.Rows)}
		for _, c := range t.Columns[:t.KeyLen] {
			d.key = append(d.key, c.Name)
		}
		rows := make(map[string][]byte, len(tr.Rows))
		if err := writeDump(d.path, tr, rows); err != nil {
			return nil, nil, err
		}
		base[t.Name] = rows
		dumps = append(dumps, d)
	}
	return dumps, base, nil
}

func writeDump(path string, tr workload.TableRows, rows map[string][]byte) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("demo: creating the dump of %s: %w", tr.Table.Name, err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	for _, r := range tr.Rows {
		img := r.AppendJSON(nil, tr.Table)
		rows[string(r.AppendKey(nil, tr.Table))] = img
		w.Write(img)
		w.WriteByte('\n')
	}
	// A bufio.Writer keeps its first error: Flush returns it.
	if err := w.Flush(); err != nil {
		return fmt.Errorf("demo: writing the dump %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("demo: writing the dump %s: %w", path, err)
	}
	return nil
}

// loader runs the load of every dump, one goroutine each, as concurrent
// `ferry load` commands would; it owns them (stop cancels and waits).
type loader struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when every load returned

	mu       sync.Mutex
	progress map[string]load.Progress
	results  map[string]load.Result
	errs     []error
}

func startLoads(ctx context.Context, st load.Stream, dumps []dump, mark load.Mark, cfg *Config) *loader {
	ctx, cancel := context.WithCancel(ctx)
	l := &loader{cancel: cancel, done: make(chan struct{}), progress: map[string]load.Progress{}, results: map[string]load.Result{}}
	var wg sync.WaitGroup
	for _, d := range dumps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc := load.Config{ChunkRows: loadChunkRows, Mark: mark.Seq, HasMark: true,
				Log: cfg.Log.With("component", "load", "table", d.table), Progress: l.report}
			res, err := load.Run(ctx, st, load.Input{JSONL: d.path}, load.Table{Name: d.table, Key: d.key}, lc)
			l.mu.Lock()
			defer l.mu.Unlock()
			l.results[d.table] = res
			if err != nil {
				l.errs = append(l.errs, fmt.Errorf("demo: loading table %s from %s: %w", d.table, d.path, err))
			}
		}()
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

// report is the loads' load.Config.Progress.
func (l *loader) report(p load.Progress) {
	l.mu.Lock()
	l.progress[p.Table] = p
	l.mu.Unlock()
}

// sent returns what the loader of table has reported.
func (l *loader) sent(table string) (load.Progress, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.progress[table]
	return p, ok
}

// wait waits until every load returned, or limit passed.
func (l *loader) wait(limit time.Duration) error {
	select {
	case <-l.done:
	case <-time.After(limit):
		return fmt.Errorf("demo: the initial loads did not finish within %v; see the log with -v", limit)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) > 0 {
		return l.errs[0]
	}
	return nil
}

// rows returns the rows the loads sent.
func (l *loader) rows() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, r := range l.results {
		n += r.Rows
	}
	return n
}

// stop cancels the loads and waits for them.
func (l *loader) stop() {
	l.cancel()
	<-l.done
}
