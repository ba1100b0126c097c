package store

import (
	"encoding/binary"
	"testing"

	"github.com/ferrysync/ferry/format"
)

// TestRowVersions: rows written by older stores (version 1, fixed-width
// fields; version 2, varints) and current ones (version 3, with the legacy's
// row version) decode to the same row.
func TestRowVersions(t *testing.T) {
	c := format.Change{Table: "t", Op: format.OpUpdate, Content: format.ContentJSON, Key: []byte("k"), After: []byte(`{"a":1}`)}
	v := Version{Source: "shop", Segment: 12, Offset: 123456789, Index: 70000}
	const commit, id = int64(1700000000123456789), uint64(1) << 40
	v1 := []byte{1, byte(c.Op), byte(c.Content)}
	v1 = binary.LittleEndian.AppendUint64(v1, v.Segment)
	v1 = binary.LittleEndian.AppendUint64(v1, uint64(v.Offset))
	v1 = binary.LittleEndian.AppendUint32(v1, uint32(v.Index))
	v1 = binary.LittleEndian.AppendUint64(v1, uint64(commit))
	v1 = binary.LittleEndian.AppendUint64(v1, id)
	v1 = appendString(v1, v.Source)
	v1 = append(v1, c.After...)
	v2 := []byte{2, byte(c.Op), byte(c.Content)}
	v2 = binary.AppendUvarint(v2, v.Segment)
	v2 = binary.AppendUvarint(v2, uint64(v.Offset))
	v2 = binary.AppendUvarint(v2, uint64(v.Index))
	v2 = binary.LittleEndian.AppendUint64(v2, uint64(commit))
	v2 = binary.AppendUvarint(v2, id)
	v2 = appendString(v2, v.Source)
	v2 = append(v2, c.After...)
	if len(v2) >= len(v1) {
		t.Fatalf("version 2 row of %d bytes, version 1 %d", len(v2), len(v1))
	}
	cv := c
	cv.Version = 1 << 50
	v3 := appendRow(nil, &cv, &v, commit, id)
	want := Row{Table: "t", Key: []byte("k"), Op: c.Op, Content: c.Content, Value: c.After, Version: v, CommitTime: commit, ChangeID: id}
	for name, b := range map[string][]byte{"v1": v1, "v2": v2, "v3": v3} {
		got, err := decodeRow("t", []byte("k"), b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		w := want
		if name == "v3" {
			w.RowVersion = cv.Version
		}
		if got.Op != w.Op || got.Content != w.Content || string(got.Value) != string(w.Value) || got.Version != w.Version ||
			got.CommitTime != w.CommitTime || got.ChangeID != w.ChangeID || got.RowVersion != w.RowVersion {
			t.Fatalf("%s: decoded %+v, want %+v", name, got, w)
		}
		// The row guard reads the same fields of every version.
		m, err := parseRowMeta(b)
		if err != nil || string(m.source) != v.Source || m.seg != v.Segment || m.off != v.Offset || m.idx != v.Index ||
			m.id != id || m.version != w.RowVersion || m.tomb {
			t.Fatalf("%s: guard fields %+v (%v)", name, m, err)
		}
	}
	if _, err := decodeRow("t", []byte("k"), v3[:8]); err == nil {
		t.Fatal("a truncated row decoded")
	}
}
