// Package report renders the results of a bench run (bench.Results): a
// markdown report with the comparison table and the goals, the JSON form,
// and SVG charts of throughput and latency per mode.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/ferrysync/ferry/bench"
)

// Goals Ferry is measured against (bench/README.md and bench/results/README.md
// say how each is met).
const (
	GoalOverheadPct = 5.0     // file mode costs the legacy at most this % of its tx/s
	GoalBytesRatio  = 1.0 / 3 // file mode writes at most this share of cdc-table's bytes per change
	GoalP99Millis   = 20.0    // end-to-end p99 at the paced rate

	// The initial load of ~200-byte rows (issue 12).
	GoalIngestRowsPerSec = 1_000_000 // a receiver applying a filled stream
	GoalLoadRowsPerSec   = 500_000   // PostgreSQL → a receiver holding every row
	GoalLoaderRSSMiB     = 128.0     // the loader process's peak RSS
)

// JSON writes res as indented JSON.
func JSON(w io.Writer, res *bench.Results) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

func mode(res *bench.Results, name bench.Mode) *bench.ModeResult {
	for i := range res.Modes {
		if res.Modes[i].Mode == string(name) && res.Modes[i].Error == "" {
			return &res.Modes[i]
		}
	}
	return nil
}

func num(f float64) string {
	switch {
	case f == 0:
		return "0"
	case f >= 100:
		return group(fmt.Sprintf("%.0f", f))
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	case f >= 1:
		return fmt.Sprintf("%.2f", f)
	default:
		return fmt.Sprintf("%.3f", f)
	}
}

// group puts thousands separators in an integer string.
func group(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func pct(f float64) string { return fmt.Sprintf("%+.1f %%", -f) }

// Table writes the comparison tables, one row per mode: the cost on the
// legacy, then the shipping.
func Table(w io.Writer, res *bench.Results) {
	baseline := mode(res, bench.ModeNone) != nil
	fmt.Fprintln(w, "Cost on the legacy:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| mode | legacy tx/s ± spread of rounds (changes/s) | vs none (sd of rounds) | tx/s while shipping | vs none in the same rounds (sd) | legacy bytes/change: WAL + data pages + files (+ shipping) | legacy CPU s/1k changes: db + app |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, m := range res.Modes {
		if m.Error != "" {
			fmt.Fprintf(w, "| %s | failed: %s ||||||\n", m.Mode, strings.ReplaceAll(m.Error, "|", "/"))
			continue
		}
		row := []string{m.Mode,
			fmt.Sprintf("%s ± %.0f %% (%s)", num(m.Load.TxPerSec), m.Load.Spread(), num(m.Load.ChangesPerSec)),
			"—", "—", "—",
			fmt.Sprintf("%s = %s + %s + %s%s", num(m.BytesPerChange), num(m.WALPerChange), num(m.DataPerChange), num(m.FilePerChange), shipBytes(m)),
			fmt.Sprintf("%s = %s + %s", num(m.LegacyCPUPer1k), num(m.LegacyDBCPUPer1k), num(m.LegacyAppCPUPer1k))}
		if m.Mode != string(bench.ModeNone) && baseline {
			row[2] = pct(m.OverheadPct)
			if m.OverheadRoundsSD > 0 {
				row[2] += fmt.Sprintf(" (sd %.0f)", m.OverheadRoundsSD)
			}
		}
		if m.Concurrent != nil {
			row[3] = num(m.Concurrent.TxPerSec)
			if baseline {
				row[4] = pct(m.ConcurrentOverheadPct)
				if m.ConcurrentRoundsSD > 0 {
					row[4] += fmt.Sprintf(" (sd %.0f)", m.ConcurrentRoundsSD)
				}
			}
		}
		fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Shipping:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| mode | max shipping changes/s (receiver apply) | shipper CPU s/1k: drain + db; live | commit→JetStream p50 / p95 / p99 ms | commit→receiver p50 / p95 / p99 ms | paced rate reached, changes/s | wire bytes/change | compression |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, m := range res.Modes {
		if m.Error != "" || m.Drain == nil {
			continue
		}
		row := []string{m.Mode, num(m.ShipChangesPerSec), fmt.Sprintf("%s + %s", num(m.ShipperCPUPer1k), num(m.ShipDBCPUPer1k)), "—", "—", "—", "—", "—"}
		if m.Apply != nil {
			row[1] += fmt.Sprintf(" (%s)", num(m.ApplyChangesPerSec))
		}
		if m.Concurrent != nil {
			row[2] += "; " + num(m.LiveShipCPUPer1k)
		}
		if m.LatencyJS != nil {
			row[3] = lat(m.LatencyJS)
		}
		if m.LatencyReceiver != nil {
			row[4] = lat(m.LatencyReceiver)
		}
		if m.Paced != nil {
			row[5] = num(m.Paced.ChangesPerSec)
		}
		if m.WireBytes > 0 {
			row[6] = num(m.WireBytesPerChange)
			row[7] = fmt.Sprintf("%.2f", m.Compression)
		}
		fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
	}
	orderTable(w, res)
	stagesTable(w, res)
	initialLoadTable(w, res)
}

// initialLoadTable writes the initial-load phase's steps, each with its
// goal.
func initialLoadTable(w io.Writer, res *bench.Results) {
	l := res.InitialLoad
	if l == nil {
		return
	}
	fmt.Fprintln(w)
	if l.Error != "" {
		fmt.Fprintf(w, "Initial load (%s rows): failed: %s\n", group(fmt.Sprint(l.Rows)), l.Error)
		return
	}
	fmt.Fprintf(w, "Initial load (bench_rows: %s rows of ~%.0f bytes, %s MiB in PostgreSQL; %s, compression %.2f: %s MB raw, %s messages, %s MB on the wire):\n\n",
		group(fmt.Sprint(l.Rows)), l.RowBytes, group(fmt.Sprint(l.TableBytes>>20)), l.Codec, l.Compression,
		num(float64(l.RawBytes)/1e6), group(fmt.Sprint(l.Messages)), num(float64(l.WireBytes)/1e6))
	fmt.Fprintln(w, "| step | rows/s | goal | s | MB/s raw | CPU s: this process + PostgreSQL |")
	fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|")
	step := func(name string, s *bench.LoadStep, goal string) {
		fmt.Fprintf(w, "| %s | %s | %s | %.2f | %s | %.2f + %.2f |\n", name, num(s.RowsPerSec), goal, s.Seconds, num(s.RawMBPerSec), s.ProcCPU, s.DBCPU)
	}
	atLeast := func(got, want float64) string {
		return fmt.Sprintf("≥ %s: %s", num(want), metText(got >= want))
	}
	step("PostgreSQL → JetStream (the loader in this process, no receiver)", &l.Stream, "—")
	step(fmt.Sprintf("receiver ingest of the filled stream (%s rows as sstables)", group(fmt.Sprint(l.IngestSSTRows))), &l.Ingest, atLeast(l.Ingest.RowsPerSec, GoalIngestRowsPerSec))
	step(fmt.Sprintf("end to end, PostgreSQL → a running receiver (%s rows as sstables)", group(fmt.Sprint(l.EndToEndSSTRows))), &l.EndToEnd, atLeast(l.EndToEnd.RowsPerSec, GoalLoadRowsPerSec))
	if p := l.Process; p != nil {
		rss := float64(l.LoaderPeakRSS) / (1 << 20)
		step("loader process (ferry load), start to exit; CPU its own", p,
			fmt.Sprintf("peak RSS %.1f MiB, ≤ %.0f MiB: %s", rss, GoalLoaderRSSMiB, metText(rss <= GoalLoaderRSSMiB)))
	}
	if c := l.StateCheck; c != nil {
		state := fmt.Sprintf("%s rows compared, %s differing (%d checks)", group(fmt.Sprint(c.Rows)), group(fmt.Sprint(c.Differ)), c.Checks)
		if c.Differ > 0 {
			state = "**" + state + "**: e.g. " + strings.Join(c.Examples, "; ")
		}
		fmt.Fprintf(w, "\nInitial load state check (the receivers' rows against the table's): %s\n", state)
	}
}

func metText(met bool) string { return map[bool]string{true: "met", false: "**NOT met**"}[met] }

// orderTable writes, for the file modes, the change files' frames out of
// the database's commit order and how the receiver's rows compared with the
// database's.
func orderTable(w io.Writer, res *bench.Results) {
	var rows []string
	for _, m := range res.Modes {
		if m.OrderCheck == nil && m.StateCheck == nil {
			continue
		}
		row := []string{m.Mode, m.WriterProtocol, "—", "—"}
		if c := m.OrderCheck; c != nil {
			row[2] = fmt.Sprintf("%s of %s", group(fmt.Sprint(c.OutOfOrder)), group(fmt.Sprint(c.Frames)))
		}
		if c := m.StateCheck; c != nil {
			row[3] = fmt.Sprintf("%s / %s (%d checks)", group(fmt.Sprint(c.Rows)), group(fmt.Sprint(c.Differ)), c.Checks)
			if c.Differ > 0 {
				row[3] = "**" + row[3] + "**"
			}
		}
		rows = append(rows, "| "+strings.Join(row, " | ")+" |")
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Order and state (the receiver's rows against the database's tables, after every phase with a receiver):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| mode | writer protocol | transaction frames out of the database's commit order | rows compared / differing |")
	fmt.Fprintln(w, "|---|---|---:|---:|")
	for _, r := range rows {
		fmt.Fprintln(w, r)
	}
}

// stagesTable writes where a legacy transaction's wall time went in the load
// phase, beside its CPU: with a handful of workers the legacy's tx/s is
// workers over that time, and on a small host the time follows the CPU.
func stagesTable(w io.Writer, res *bench.Results) {
	var rows []string
	for _, m := range res.Modes {
		st, l := m.Load.TxStages, m.Load
		if st == nil || l.Txs == 0 {
			continue
		}
		us := func(s float64) string { return group(fmt.Sprintf("%.0f", s)) }
		db, app := l.DBCPU/float64(l.Txs)*1e6, l.ProcCPU/float64(l.Txs)*1e6
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s = %s + %s |", m.Mode, us(st.Exec), us(st.Append), us(st.Commit), us(st.After), us(st.Total()), us(db+app), us(db), us(app)))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Where a legacy transaction's time goes (load phase, mean µs per transaction; exec includes waits on the hot rows' locks, append and COMMIT run holding them):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| mode | exec: BEGIN + statements | change-file append before COMMIT | COMMIT | change files after COMMIT | wall | CPU: db + app |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintln(w, r)
	}
}

func shipBytes(m bench.ModeResult) string {
	if m.ShipBytesPerChange < 0.5 {
		return ""
	}
	return " + shipping " + num(m.ShipBytesPerChange)
}

func lat(l *bench.Latency) string {
	if l.Samples == 0 {
		return "no samples"
	}
	return fmt.Sprintf("%s / %s / %s", num(l.P50), num(l.P95), num(l.P99))
}

// Goal is one of the goals, evaluated.
type Goal struct {
	Name   string
	Want   string
	Got    string
	Met    bool
	Known  bool // false when the run lacks the modes to tell
	Detail string
}

// Goals evaluates the goals against res.
func Goals(res *bench.Results) []Goal {
	file, table := mode(res, bench.ModeFile), mode(res, bench.ModeCDCTable)
	none := mode(res, bench.ModeNone)
	var out []Goal
	g := Goal{Name: "file mode's cost to the legacy's transactions/s (capture only)", Want: fmt.Sprintf("≤ %.0f %%", GoalOverheadPct)}
	if file != nil && none != nil {
		g.Known, g.Got, g.Met = true, fmt.Sprintf("%.1f %%", file.OverheadPct), file.OverheadPct <= GoalOverheadPct
	}
	out = append(out, g)
	g = Goal{Name: "file mode's cost with the shipper running on the same host", Want: fmt.Sprintf("≤ %.0f %%", GoalOverheadPct)}
	if file != nil && none != nil && file.Concurrent != nil {
		g.Known, g.Got, g.Met = true, fmt.Sprintf("%.1f %%", file.ConcurrentOverheadPct), file.ConcurrentOverheadPct <= GoalOverheadPct
	}
	out = append(out, g)
	g = Goal{Name: "legacy bytes per change, file / cdc-table", Want: "≤ 1/3"}
	if file != nil && table != nil && table.BytesPerChange > 0 {
		r := file.BytesPerChange / table.BytesPerChange
		g.Known, g.Got, g.Met = true, fmt.Sprintf("%.2f (%s / %s bytes)", r, num(file.BytesPerChange), num(table.BytesPerChange)), r <= GoalBytesRatio
	}
	out = append(out, g)
	g = Goal{Name: "capture's extra bytes per change over none, file / cdc-table", Want: "≤ 1/3"}
	if file != nil && table != nil && none != nil && table.BytesPerChange > none.BytesPerChange {
		fx, tx := file.BytesPerChange-none.BytesPerChange, table.BytesPerChange-none.BytesPerChange
		r := fx / tx
		g.Known, g.Got, g.Met = true, fmt.Sprintf("%.2f (%s / %s bytes)", r, num(fx), num(tx)), r <= GoalBytesRatio
	}
	out = append(out, g)
	g = Goal{Name: "file mode's receiver holds the database's rows (compared row by row after every phase with a receiver)", Want: "0 differing"}
	if file != nil && file.StateCheck != nil {
		c := file.StateCheck
		g.Known, g.Got, g.Met = true, fmt.Sprintf("%s of %s rows differ", group(fmt.Sprint(c.Differ)), group(fmt.Sprint(c.Rows))), c.Differ == 0
	}
	out = append(out, g)
	g = Goal{Name: fmt.Sprintf("end-to-end p99, commit → applied by the receiver, at %s changes/s", num(res.Settings.LatencyRate)), Want: fmt.Sprintf("≤ %.0f ms", GoalP99Millis)}
	if file != nil && file.LatencyReceiver != nil && file.LatencyReceiver.Samples > 0 {
		g.Known, g.Got, g.Met = true, fmt.Sprintf("%.2f ms", file.LatencyReceiver.P99), file.LatencyReceiver.P99 <= GoalP99Millis
		if file.Paced != nil && file.Paced.ChangesPerSec < 0.9*res.Settings.LatencyRate {
			g.Detail = fmt.Sprintf("the legacy reached only %s changes/s of the %s asked", num(file.Paced.ChangesPerSec), num(res.Settings.LatencyRate))
		}
	}
	out = append(out, g)
	return append(out, initialLoadGoals(res)...)
}

// initialLoadGoals evaluates the initial load's goals (issue 12).
func initialLoadGoals(res *bench.Results) []Goal {
	l := res.InitialLoad
	ok := l != nil && l.Error == ""
	rows := func(s bench.LoadStep) string { return num(s.RowsPerSec) + " rows/s" }
	g1 := Goal{Name: "initial load: a receiver's ingest of a filled stream, ~200-byte rows", Want: fmt.Sprintf("≥ %s rows/s", num(GoalIngestRowsPerSec))}
	g2 := Goal{Name: "initial load end to end, PostgreSQL → a receiver holding every row", Want: fmt.Sprintf("≥ %s rows/s", num(GoalLoadRowsPerSec))}
	g3 := Goal{Name: "initial load: the loader process's peak RSS", Want: fmt.Sprintf("≤ %.0f MiB", GoalLoaderRSSMiB)}
	g4 := Goal{Name: "initial load: the receivers hold the table's rows (compared row by row)", Want: "0 differing"}
	if ok {
		g1.Known, g1.Got, g1.Met = true, rows(l.Ingest), l.Ingest.RowsPerSec >= GoalIngestRowsPerSec
		g2.Known, g2.Got, g2.Met = true, rows(l.EndToEnd), l.EndToEnd.RowsPerSec >= GoalLoadRowsPerSec
		if l.Process != nil {
			rss := float64(l.LoaderPeakRSS) / (1 << 20)
			g3.Known, g3.Got, g3.Met = true, fmt.Sprintf("%.1f MiB", rss), rss <= GoalLoaderRSSMiB
			g3.Detail = fmt.Sprintf("%s rows", group(fmt.Sprint(l.Rows)))
		}
		if c := l.StateCheck; c != nil && c.Checks > 0 {
			g4.Known, g4.Got, g4.Met = true, fmt.Sprintf("%s of %s rows differ", group(fmt.Sprint(c.Differ)), group(fmt.Sprint(c.Rows))), c.Differ == 0
		}
	}
	return []Goal{g1, g2, g3, g4}
}

// Markdown writes the whole report.
func Markdown(w io.Writer, res *bench.Results) {
	fmt.Fprintf(w, "# Ferry bench: %s profile\n\n", res.Profile)
	m := res.Machine
	fmt.Fprintf(w, "Run %s, %.0f s. Machine: %d cores (%s), %s MiB memory, %s, %s, PostgreSQL %s; load average %.1f at the start, %.1f at the end.\n\n",
		res.Started.Format("2006-01-02 15:04 UTC"), res.Seconds, m.Cores, m.CPU, group(fmt.Sprint(m.MemoryMiB)), m.Kernel, m.Go, m.Postgres, m.LoadAvgStart, m.LoadAvgEnd)
	if res.Note != "" {
		fmt.Fprintf(w, "> %s\n\n", res.Note)
	}
	s := res.Settings
	fmt.Fprintf(w, "Workload: %d concurrent workers (%d in the paced phase), %d changes per transaction, rows of ~%d bytes, mix insert/update/delete %s, seed %d; %d hot stock rows shared by every worker, updated (UPDATE … RETURNING) by %d %% of the transactions; %.0f s per timed phase; paced phase at %s changes/s. Durability %s (change-file writer sync %s; writer protocols %s). cdc-table poll every %.0f ms, cleanup every %.0f ms.\n\n",
		s.Streams, s.PacedStreams, s.TxSize, s.RowSize, s.Mix, s.Seed, s.HotRows, s.HotPct, s.PhaseSeconds, num(s.LatencyRate), s.Durability, s.WriterSync, s.WriterProtocols, s.PollMillis, s.CleanupMillis)
	Table(w, res)
	fmt.Fprint(w, "\n## Goals\n\n")
	fmt.Fprintln(w, "| goal | want | measured | met |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, g := range Goals(res) {
		met := "not measured"
		if g.Known {
			met = map[bool]string{true: "yes", false: "**no**"}[g.Met]
		}
		got := g.Got
		if g.Detail != "" {
			got += " (" + g.Detail + ")"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", g.Name, g.Want, got, met)
	}
	fmt.Fprint(w, "\n## Phases\n\n")
	fmt.Fprintln(w, "| mode | phase | s | tx | changes | tx/s | changes/s | WAL bytes | data page bytes | file bytes | relation growth | PostgreSQL CPU s | this process CPU s | child CPU s |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, m := range res.Modes {
		for _, p := range []struct {
			name string
			p    *bench.Phase
		}{{"load", &m.Load}, {"drain", m.Drain}, {"apply", m.Apply}, {"concurrent", m.Concurrent}, {"none beside concurrent", m.ConcurrentBaseline}, {"paced", m.Paced}} {
			if p.p == nil || p.p.Seconds == 0 {
				continue
			}
			q := p.p
			fmt.Fprintf(w, "| %s | %s | %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %.2f | %.2f |\n", m.Mode, p.name, q.Seconds,
				group(fmt.Sprint(q.Txs)), group(fmt.Sprint(q.Changes)), num(q.TxPerSec), num(q.ChangesPerSec),
				group(fmt.Sprint(q.WALBytes)), group(fmt.Sprint(q.DataBytes)), group(fmt.Sprint(q.FileBytes)), group(fmt.Sprint(q.RelationGrowth)),
				q.DBCPU, q.ProcCPU, q.ChildCPU)
		}
	}
	fmt.Fprint(w, "\n## How the figures are made\n\n")
	for _, n := range res.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
}
