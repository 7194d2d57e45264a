package segment

import (
	"hash/crc32"

	"github.com/cespare/xxhash/v2"
)

// castagnoli is the CRC-32C table. CRC-32C rather than IEEE because it is the
// checksum storage systems standardise on (iSCSI, ext4, S3's additional
// checksums) and it runs in hardware on amd64 and arm64, so checking every
// frame costs almost nothing next to decompressing it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksum returns the CRC-32C of a followed by b. Frames checksum their
// header fields followed by their payload, the index checksums itself
// followed by the trailer fields, without copying either into one buffer.
func checksum(a, b []byte) uint32 {
	return crc32.Update(crc32.Checksum(a, castagnoli), castagnoli, b)
}

// PageHash returns the content hash of a page: XXH64 with seed 0 of its
// bytes. It is stored in every index entry and in pages.Location.Hash, and
// every reader checks it, so a page that decompressed from an intact frame
// but is not the page its location names (a wrong offset, a stale index row)
// is still caught. XXH64 runs at memory speed; it is not a defence against an
// adversary who can write segments, only against accidents.
func PageHash(page []byte) uint64 {
	return xxhash.Sum64(page)
}
