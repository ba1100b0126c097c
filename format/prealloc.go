package format

// SegmentDataSize returns where the data of the segment file at path ends:
// its size, less the reserved space of a segment a writer preallocated
// (SPEC.md, "Writers", step 3) that no frame reached yet. Sizes of change
// files (their end, the bytes they hold) are measured with it.
func SegmentDataSize(path string) (int64, error) {
	f, err := OpenSegment(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return DataSize(f, fi.Size())
}
