package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ferrysync/ferry/format/jsonl"
	"io"
	"os"
	"slices"
	"strconv"

	fload "github.com/ferrysync/ferry/format/load"
)

// maxLine bounds a dump line (JSONL) or record (CSV).
const maxLine = 16 << 20

// dumpSource reads a JSON lines or CSV dump in file order. Its chunks are
// bounded by record numbers: a row's tuple is its record number (JSONL: its
// line number; CSV: the data record's number, the header excluded), so a
// resumed load skips that many records.
type dumpSource struct {
	path    string
	csv     bool
	t       Table
	numeric map[string]bool

	f    *os.File
	br   *bufio.Reader
	cr   *csv.Reader
	hdr  []string // CSV columns
	kidx []int    // CSV: indexes of the key columns
	vidx int      // CSV: index of the version column, -1
	rec  int64    // records consumed
	line int64    // JSONL: lines consumed
	buf  []byte
	rb   []byte // JSONL: the compacted line
}

func openDump(path string, isCSV bool, t Table, numeric []string) (*dumpSource, error) {
	if len(t.Key) == 0 {
		return nil, fmt.Errorf("%w: a dump needs its key columns: --key COL[,COL...] (the columns the legacy's change files build the key from)", ErrInput)
	}
	s := &dumpSource{path: path, csv: isCSV, t: t, numeric: map[string]bool{}, vidx: -1}
	for _, n := range numeric {
		s.numeric[n] = true
	}
	if err := s.reopen(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *dumpSource) close() {
	if s.f != nil {
		s.f.Close()
	}
}

// reopen opens the file at its start.
func (s *dumpSource) reopen() error {
	s.close()
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("load: opening the dump: %w", err)
	}
	s.f, s.br, s.rec, s.line = f, bufio.NewReaderSize(f, 1<<20), 0, 0
	if !s.csv {
		return nil
	}
	s.cr = csv.NewReader(s.br)
	s.cr.ReuseRecord = true
	s.cr.FieldsPerRecord = -1 // checked against the header, naming the line
	hdr, err := s.cr.Read()
	if err != nil {
		return s.csvErr(err, "reading the header line")
	}
	s.hdr = slices.Clone(hdr)
	s.kidx = s.kidx[:0]
	for _, k := range s.t.Key {
		i := slices.Index(s.hdr, k)
		if i < 0 {
			return fmt.Errorf("%w: %s: the header has no key column %q (--key); it has %v", ErrDump, s.path, k, s.hdr)
		}
		s.kidx = append(s.kidx, i)
	}
	if s.t.VersionColumn != "" {
		if s.vidx = slices.Index(s.hdr, s.t.VersionColumn); s.vidx < 0 {
			return fmt.Errorf("%w: %s: the header has no version column %q (--version-column)", ErrDump, s.path, s.t.VersionColumn)
		}
	}
	for n := range s.numeric {
		if !slices.Contains(s.hdr, n) {
			return fmt.Errorf("%w: %s: the header has no column %q (--numeric)", ErrDump, s.path, n)
		}
	}
	return nil
}

func (s *dumpSource) csvErr(err error, what string) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%w: %s:%d: %s: %v", ErrDump, s.path, pe.StartLine, what, pe.Err)
	}
	if err == io.EOF {
		return fmt.Errorf("%w: %s: empty file (a CSV dump starts with a header line naming the columns)", ErrDump, s.path)
	}
	return fmt.Errorf("load: %s: %s: %w", s.path, what, err)
}

func (s *dumpSource) plan(ctx context.Context) (plan, error) {
	p := plan{input: "jsonl", keyColumns: s.t.Key, versionColumn: s.t.VersionColumn, estimate: -1}
	if s.csv {
		p.input = "csv"
	}
	// Estimate: the file's lines (one pass, cheap next to the load).
	f, err := os.Open(s.path)
	if err != nil {
		return p, fmt.Errorf("load: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if err == io.EOF {
			break
		}
		if err != nil {
			return p, fmt.Errorf("load: reading %s: %w", s.path, err)
		}
	}
	if s.csv && n > 0 {
		n-- // the header
	}
	p.estimate = n
	return p, nil
}

// chunk reads up to n records after record lo[0].
func (s *dumpSource) chunk(ctx context.Context, lo, _ fload.Key, n int, emit func(r *row) error) (int, error) {
	var after int64
	if lo != nil {
		v, err := strconv.ParseInt(string(lo[0]), 10, 64)
		if err != nil || len(lo) != 1 || v < 0 {
			return 0, fmt.Errorf("load: %s: resume point %q is not a record number", s.path, lo.Strings())
		}
		after = v
	}
	if after < s.rec {
		if err := s.reopen(); err != nil {
			return 0, err
		}
	}
	var r row
	r.tuple = fload.Key{nil}
	count := 0
	for count < n {
		if err := ctx.Err(); err != nil {
			return count, err
		}
		ok, err := s.next(&r)
		if err != nil {
			return count, err
		}
		if !ok {
			break
		}
		if s.rec <= after {
			continue // resuming: already sent
		}
		r.tuple[0] = strconv.AppendInt(r.tuple[0][:0], s.rec, 10)
		count++
		if err := emit(&r); err != nil {
			return count, err
		}
	}
	return count, nil
}

// next reads the next record into r; false at the end of the file.
func (s *dumpSource) next(r *row) (bool, error) {
	if s.csv {
		return s.nextCSV(r)
	}
	for {
		line, err := s.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line: gather it.
			s.buf = append(s.buf[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(s.buf) <= maxLine {
				line, err = s.br.ReadSlice('\n')
				s.buf = append(s.buf, line...)
			}
			if len(s.buf) > maxLine {
				return false, fmt.Errorf("%w: %s:%d: a line over %d bytes", ErrDump, s.path, s.line+1, maxLine)
			}
			line = s.buf
		}
		if err != nil && err != io.EOF {
			return false, fmt.Errorf("load: reading %s: %w", s.path, err)
		}
		if len(line) == 0 && err == io.EOF {
			return false, nil
		}
		s.line++
		if len(bytes.TrimSpace(line)) == 0 {
			if err == io.EOF {
				return false, nil
			}
			continue // blank lines carry no row
		}
		s.rec = s.line
		if perr := s.parseJSONL(r, line); perr != nil {
			return false, fmt.Errorf("%w: %s:%d: %v", ErrDump, s.path, s.line, perr)
		}
		return true, nil
	}
}

func (s *dumpSource) parseJSONL(r *row, line []byte) error {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return errors.New("not a JSON object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return err
	}
	r.key = r.key[:0]
	for i, k := range s.t.Key {
		v, ok := fields[k]
		if !ok {
			return fmt.Errorf("no key field %q", k)
		}
		text, err := keyText(v)
		if err != nil {
			return fmt.Errorf("key field %q: %v", k, err)
		}
		if i > 0 {
			r.key = append(r.key, s.t.KeySep...)
		}
		r.key = append(r.key, text...)
	}
	if len(r.key) == 0 {
		return errors.New("empty key")
	}
	r.version = 0
	if s.t.VersionColumn != "" {
		v, ok := fields[s.t.VersionColumn]
		if !ok {
			return fmt.Errorf("no version field %q", s.t.VersionColumn)
		}
		if string(v) != "null" {
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return fmt.Errorf("version field %q holds %s, not a non-negative integer", s.t.VersionColumn, v)
			}
			r.version = n
		}
	}
	var cb bytes.Buffer
	cb.Grow(len(line))
	if err := json.Compact(&cb, line); err != nil {
		return err
	}
	r.image = append(r.image[:0], cb.Bytes()...)
	return nil
}

// keyText renders a JSON key field as the change files' key text: a string's
// content, a number's literal.
func keyText(v json.RawMessage) (string, error) {
	switch {
	case len(v) > 0 && v[0] == '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", err
		}
		return s, nil
	case len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9'):
		return string(v), nil
	}
	return "", fmt.Errorf("%s is not a string or a number", v)
}

func (s *dumpSource) nextCSV(r *row) (bool, error) {
	rec, err := s.cr.Read()
	if err == io.EOF {
		return false, nil
	}
	if err != nil {
		return false, s.csvErr(err, "a malformed record")
	}
	line, _ := s.cr.FieldPos(0)
	s.rec++
	if len(rec) != len(s.hdr) {
		return false, fmt.Errorf("%w: %s:%d: %d fields, the header has %d", ErrDump, s.path, line, len(rec), len(s.hdr))
	}
	r.key = r.key[:0]
	for i, k := range s.kidx {
		if i > 0 {
			r.key = append(r.key, s.t.KeySep...)
		}
		r.key = append(r.key, rec[k]...)
	}
	if len(r.key) == 0 {
		return false, fmt.Errorf("%w: %s:%d: empty key", ErrDump, s.path, line)
	}
	r.version = 0
	if s.vidx >= 0 && rec[s.vidx] != "" {
		n, err := strconv.ParseUint(rec[s.vidx], 10, 64)
		if err != nil {
			return false, fmt.Errorf("%w: %s:%d: version column %q holds %q, not a non-negative integer", ErrDump, s.path, line, s.t.VersionColumn, rec[s.vidx])
		}
		r.version = n
	}
	img := append(r.image[:0], '{')
	for i, v := range rec {
		if i > 0 {
			img = append(img, ',')
		}
		img = jsonl.AppendString(img, s.hdr[i])
		img = append(img, ':')
		if s.numeric[s.hdr[i]] {
			switch {
			case v == "":
				img = append(img, "null"...)
			case json.Valid([]byte(v)) && (v[0] == '-' || v[0] >= '0' && v[0] <= '9'):
				img = append(img, v...)
			default:
				return false, fmt.Errorf("%w: %s:%d: column %q (--numeric) holds %q, not a number", ErrDump, s.path, line, s.hdr[i], v)
			}
			continue
		}
		img = jsonl.AppendString(img, v)
	}
	r.image = append(img, '}')
	return true, nil
}
