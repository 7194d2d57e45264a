package pages

import (
	"strings"
	"unicode/utf8"
)

// MaxKeyLen is S3's limit on an object key, applied by every Store so that a
// key valid in one backend is valid in all.
const MaxKeyLen = 1024

// ReservedKeyPrefix starts no segment of a valid key: stores may use it for
// their temporary files (pages/dirstore does).
const ReservedKeyPrefix = ".cambium-tmp-"

// ValidKey reports whether key is a valid object key: a non-empty, UTF-8,
// slash-separated relative path of at most MaxKeyLen bytes, without empty,
// "." or ".." segments, backslashes, control characters, or segments that
// start with ReservedKeyPrefix. Stores return ErrInvalidKey for any other.
func ValidKey(key string) bool { return validKey(key, false) }

// ValidPrefix reports whether prefix is a valid List prefix: empty, or a
// valid key whose last segment may be partial (empty, ".", "..").
func ValidPrefix(prefix string) bool { return validKey(prefix, true) }

func validKey(key string, isPrefix bool) bool {
	if key == "" {
		return isPrefix
	}
	if len(key) > MaxKeyLen || !utf8.ValidString(key) {
		return false
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return false
		}
	}
	segs := strings.Split(key, "/")
	for i, seg := range segs {
		if isPrefix && i == len(segs)-1 {
			break
		}
		if seg == "" || seg == "." || seg == ".." || strings.HasPrefix(seg, ReservedKeyPrefix) {
			return false
		}
	}
	return true
}
