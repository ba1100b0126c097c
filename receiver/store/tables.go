package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Table writers. The row guard reads the stored row of an unversioned
// change only if another source has written its table (guard.go), so the
// store records, once per pair, that a source has written a table:
//
//	'w' + uvarint(len(table)) + table + source  ->  (empty)
//
// A store created before these records (it has applied transactions but no
// 'mtablewriters' marker) cannot tell which tables its sources wrote: every
// source that applied a transaction counts as a writer of every table, so
// two such sources keep every change checked, as before; a rebuild (or a
// new store) records the pairs from the start.

func tableWriterKey(table, source string) []byte {
	k := append([]byte{prefixWriter}, binary.AppendUvarint(nil, uint64(len(table)))...)
	return append(append(k, table...), source...)
}

func (s *Store) loadTableWriters() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixWriter}, UpperBound: []byte{prefixWriter + 1}})
	if err != nil {
		return fmt.Errorf("store: reading table writers: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[1:]
		n, w := binary.Uvarint(k)
		if w <= 0 || n > uint64(len(k)-w) {
			it.Close()
			return fmt.Errorf("store: corrupt table writer key %q", it.Key())
		}
		table, source := string(k[w:w+int(n)]), string(k[w+int(n):])
		s.tables[table] = append(s.tables[table], source)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("store: reading table writers: %w", err)
	}
	_, closer, err := s.db.Get(keyWriters)
	if err == nil {
		closer.Close()
		return nil
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("store: reading %s: %w", keyWriters, err)
	}
	for src, p := range s.positions {
		if p.Transactions > 0 {
			s.seedWriters = append(s.seedWriters, src)
		}
	}
	if len(s.seedWriters) > 0 {
		s.log.Info("store: written before per-table writer records; every source that applied transactions counts as a writer of every table (rebuild to record them)", "sources", s.seedWriters)
		return nil
	}
	// Nothing applied yet: the records will be complete.
	if err := s.db.Set(keyWriters, nil, s.wo); err != nil {
		return fmt.Errorf("store: setting %s: %w", keyWriters, err)
	}
	s.committed()
	return nil
}

// tableWriters returns a copy of the sources that have written each table.
func (s *Store) tableWriters() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string][]string, len(s.tables))
	for t, srcs := range s.tables {
		m[t] = slices.Clone(srcs)
		for _, src := range s.seedWriters {
			if !slices.Contains(m[t], src) {
				m[t] = append(m[t], src)
			}
		}
	}
	return m
}

// tableWriter notes that source writes table and reports whether more than
// one source has written it (counting a pre-record store's seed writers).
func (b *Batch) tableWriter(table, source string) bool {
	srcs, ok := b.tables[table]
	if !ok && len(b.s.seedWriters) > 0 {
		srcs = slices.Clone(b.s.seedWriters)
		b.tables[table] = srcs
	}
	if !slices.Contains(srcs, source) {
		srcs = append(srcs, source)
		b.tables[table] = srcs
		b.w.tablePairs = append(b.w.tablePairs, [2]string{table, source})
	}
	return len(srcs) > 1
}

// Table versions. Legacy row versions usually increase across a whole table
// (a PostgreSQL sequence, SQL Server rowversion, Oracle's SCN): a change
// whose version is above every version the table ever held is newer than
// its row, whatever the row is, so the guard need not read it. The store
// keeps, per table, the highest version applied and whether any change
// without a version was applied (then the rule needs the row):
//
//	'v' + table  ->  | highest version u64 LE | flags u8 (bit 0: unversioned seen) |
//
// Only a store whose table records are complete (not seeded, above) uses
// them: an older one may hold rows these records never saw.

type tableVer struct {
	max         uint64
	unversioned bool
}

func tableVerKey(table string) []byte { return append([]byte{prefixTableVer}, table...) }

func (s *Store) loadTableVersions() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixTableVer}, UpperBound: []byte{prefixTableVer + 1}})
	if err != nil {
		return fmt.Errorf("store: reading table versions: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		v := it.Value()
		if len(v) != 9 {
			it.Close()
			return fmt.Errorf("store: corrupt table version record %q", it.Key())
		}
		s.tver[string(it.Key()[1:])] = tableVer{max: binary.LittleEndian.Uint64(v), unversioned: v[8]&1 != 0}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("store: reading table versions: %w", err)
	}
	return nil
}

func (s *Store) tableVersions() map[string]tableVer {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]tableVer, len(s.tver))
	for t, v := range s.tver {
		m[t] = v
	}
	return m
}

// aboveTable reports whether version v is above every version table ever
// held, with no unversioned change in it: the change is then newer than
// its row without reading it.
func (b *Batch) aboveTable(tv tableVer, v uint64) bool {
	return v != 0 && len(b.s.seedWriters) == 0 && !tv.unversioned && v > tv.max
}

// noteTableVer records an applied change's version in its table's record.
func (b *Batch) noteTableVer(table string, tv *tableVer, v uint64) {
	switch {
	case v == 0 && !tv.unversioned:
		tv.unversioned = true
	case v > tv.max:
		tv.max = v
	default:
		return
	}
	b.tver[table] = *tv
	if b.w.tverDirty == nil {
		b.w.tverDirty = map[string]tableVer{}
	}
	b.w.tverDirty[table] = *tv
}
