package pages

// Location says where the bytes of one page version live: the frame of a
// segment that holds it and its place in that frame once decompressed. The
// metastore stores one Location per (volume, page number, version).
type Location struct {
	Segment     string // object key of the segment
	FrameOffset int64  // byte offset of the frame in the segment
	FrameLength int64  // byte length of the frame, header included
	PageOffset  int64  // byte offset of the page in the decompressed frame
	Hash        uint64 // content hash of the page (segment.PageHash)
}

// PageKey names one immutable page version: page PageNo of volume Volume as
// written by version Version. Its bytes never change, so caches keyed by it
// need no invalidation.
type PageKey struct {
	Volume  int64
	PageNo  uint32
	Version int64
}
