package store

import (
	"encoding/binary"
	"testing"

	"github.com/ferrysync/ferry/format"
)

// TestRowVersions: rows written by older stores (version 1, fixed-width
// fields) and current ones (version 2, varints) decode to the same row.
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
	v2 := appendRow(nil, &c, &v, commit, id)
	if len(v2) >= len(v1) {
		t.Fatalf("version 2 row of %d bytes, version 1 %d", len(v2), len(v1))
	}
	want := Row{Table: "t", Key: []byte("k"), Op: c.Op, Content: c.Content, Value: c.After, Version: v, CommitTime: commit, ChangeID: id}
	for name, b := range map[string][]byte{"v1": v1, "v2": v2} {
		got, err := decodeRow("t", []byte("k"), b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Op != want.Op || got.Content != want.Content || string(got.Value) != string(want.Value) || got.Version != want.Version ||
			got.CommitTime != want.CommitTime || got.ChangeID != want.ChangeID {
			t.Fatalf("%s: decoded %+v, want %+v", name, got, want)
		}
	}
	if _, err := decodeRow("t", []byte("k"), v2[:8]); err == nil {
		t.Fatal("a truncated row decoded")
	}
}
