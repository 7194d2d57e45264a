package pages

import (
	"strings"
	"testing"
)

func TestValidKey(t *testing.T) {
	for _, tt := range []struct {
		key      string
		isPrefix bool
		want     bool
	}{
		{"segments/ab12", false, true},
		{"segments/", false, false},
		{"segments/", true, true},
		{"", true, true},
		{"", false, false},
		{"a/..", true, true}, // matches "a/..b"
		{"a/../b", true, false},
		{"segments/" + ReservedKeyPrefix + "1", false, false},
		{strings.Repeat("k", MaxKeyLen), false, true},
		{strings.Repeat("k", MaxKeyLen+1), false, false},
	} {
		got := ValidKey(tt.key)
		if tt.isPrefix {
			got = ValidPrefix(tt.key)
		}
		if got != tt.want {
			t.Errorf("valid(%q, prefix %v)=%v, want %v", tt.key, tt.isPrefix, got, tt.want)
		}
	}
}
