// Package inbox delivers write-back commands to the legacy, on the legacy's
// host (SPEC.md, "Write-back commands"): an Agent consumes the commands
// stream of one source and writes every command into an inbox directory
// next to the change files, as files a batch job in any language can read
// (and, optionally, POSTs them to a legacy endpoint); Consume is the Go API
// a Go legacy reads the inbox with.
//
// What is and is not promised. Commands of one source reach the inbox in
// stream order, but for a command whose delivery was lost (a killed agent,
// a dropped connection), offered again after AckWait behind later ones;
// each at least once: a command
// stays in the inbox, and is offered again to the legacy after any crash,
// until the legacy's change files hold its outcome (a transaction carrying
// its id, committed, a rejection frame or an applied frame naming it); the
// agent reads the change files itself to see that (outcomes.go). Exactly
// once in effect is the legacy's part: it records the command id in the
// same database transaction as the write, and a command it already carried
// out is not carried out again but has its outcome written again (Handler).
package inbox

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/ferrysync/ferry/format/command"
)

// Inbox file names: cmd-<first stream sequence, 20 digits>.jsonl, so that
// name order is delivery order. Files being written carry a leading dot and
// are never read.
const (
	filePrefix = "cmd-"
	fileSuffix = ".jsonl"
	tmpPrefix  = ".tmp-"
)

// FileName returns the inbox file name of a batch starting at stream
// sequence seq.
func FileName(seq uint64) string { return fmt.Sprintf("%s%020d%s", filePrefix, seq, fileSuffix) }

// ParseFileName returns the first stream sequence of an inbox file name.
func ParseFileName(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, filePrefix)
	if !ok {
		return 0, false
	}
	if s, ok = strings.CutSuffix(s, fileSuffix); !ok || len(s) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// File is an inbox file.
type File struct {
	Name string
	Seq  uint64 // first stream sequence
	Path string
}

// List returns the inbox files of dir in delivery order.
func List(dir string) ([]File, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("inbox: listing %s: %w", dir, err)
	}
	var out []File
	for _, e := range ents {
		if seq, ok := ParseFileName(e.Name()); ok && e.Type().IsRegular() {
			out = append(out, File{Name: e.Name(), Seq: seq, Path: filepath.Join(dir, e.Name())})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// ReadFile reads the commands of an inbox file. A line that is not a valid
// command is an error naming the file and line: the agent writes none.
func ReadFile(path string) ([]command.Command, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("inbox: reading %s: %w", path, err)
	}
	out := make([]command.Command, 0, bytes.Count(b, []byte{'\n'})+1)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, command.MaxImage+64<<10+1024)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		c, err := command.Unmarshal(sc.Bytes(), 0)
		if err != nil {
			return nil, fmt.Errorf("inbox: %s line %d: %w", path, line, err)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("inbox: %s: %w", path, err)
	}
	return out, nil
}

// writeFile writes cmds as the inbox file for their first sequence: to a
// temporary name, fsynced, renamed, and the directory fsynced, so that a
// reader sees the whole file or nothing and a crash keeps what was renamed.
func writeFile(dir string, cmds []command.Command) (string, error) {
	n := 0
	for i := range cmds {
		n += 256 + len(cmds[i].After)
	}
	buf := make([]byte, 0, n)
	for i := range cmds {
		var err error
		if buf, err = command.Append(buf, &cmds[i]); err != nil {
			return "", err
		}
	}
	name := FileName(cmds[0].Seq)
	tmp := filepath.Join(dir, tmpPrefix+name)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return "", fmt.Errorf("inbox: creating %s: %w", tmp, err)
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return "", fmt.Errorf("inbox: writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("inbox: syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("inbox: closing %s: %w", tmp, err)
	}
	final := filepath.Join(dir, name)
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("inbox: renaming %s: %w", tmp, err)
	}
	return final, syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("inbox: opening directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("inbox: syncing directory %s: %w", dir, err)
	}
	return nil
}

// removeTemps removes files a crashed agent left half written.
func removeTemps(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("inbox: listing %s: %w", dir, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("inbox: removing %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}
