package pgschema

import (
	"fmt"
	"regexp"
)

// MaxVolumeNameLen bounds a volume name's length in bytes.
const MaxVolumeNameLen = 128

var volumeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ValidateVolumeName accepts 1 to MaxVolumeNameLen characters of letters,
// digits, '.', '_' and '-', starting with a letter or digit, so a name is safe
// in URLs, object keys and file names.
func ValidateVolumeName(name string) error {
	if len(name) == 0 || len(name) > MaxVolumeNameLen || !volumeNameRE.MatchString(name) {
		return &InvalidError{Field: "volume name", Reason: fmt.Sprintf("%q: want 1-%d of [A-Za-z0-9._-], starting with a letter or digit", name, MaxVolumeNameLen)}
	}
	return nil
}

// ValidatePolicy accepts the conflict policies.
func ValidatePolicy(policy string) error {
	switch policy {
	case PolicyReplay, PolicyStrict, PolicyNoMerge:
		return nil
	}
	return &InvalidError{Field: "policy", Reason: fmt.Sprintf("%q: want %s, %s or %s", policy, PolicyReplay, PolicyStrict, PolicyNoMerge)}
}

// MaxMutatorNameLen and MaxMutatorSQLLen bound a mutator's definition.
const (
	MaxMutatorNameLen = 64
	MaxMutatorSQLLen  = 64 << 10
)

var mutatorNameRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]*$`)

// ValidateMutatorName accepts 1 to MaxMutatorNameLen of [a-z0-9_.-],
// starting with a letter.
func ValidateMutatorName(name string) error {
	if len(name) == 0 || len(name) > MaxMutatorNameLen || !mutatorNameRE.MatchString(name) {
		return &InvalidError{Field: "mutator name", Reason: fmt.Sprintf("%q: want 1-%d of [a-z0-9_.-], starting with a letter", name, MaxMutatorNameLen)}
	}
	return nil
}

// ValidateMutatorSQL bounds a mutator's SQL; whether it runs is the replay
// engine's to say.
func ValidateMutatorSQL(sql string) error {
	if len(sql) > MaxMutatorSQLLen {
		return &InvalidError{Field: "mutator sql", Reason: fmt.Sprintf("%d bytes, at most %d", len(sql), MaxMutatorSQLLen)}
	}
	return nil
}

// ValidatePageSize accepts the page sizes SQLite supports: powers of two from
// 512 to 65536.
func ValidatePageSize(size int) error {
	if size < 512 || size > 65536 || size&(size-1) != 0 {
		return &InvalidError{Field: "page size", Reason: fmt.Sprintf("%d: want a power of two from 512 to 65536", size)}
	}
	return nil
}

// ValidateNewCommit checks the fields of c that do not need the database:
// implementations call it first in Append so both reject the same commits.
func ValidateNewCommit(c *NewCommit) error {
	switch {
	case c.Version < 1:
		return &InvalidError{Field: "version", Reason: fmt.Sprintf("%d: versions start at 1", c.Version)}
	case c.Base < 0 || c.Base >= c.Version:
		return &InvalidError{Field: "base", Reason: fmt.Sprintf("%d: want 0 <= base < version %d", c.Base, c.Version)}
	case c.ClientID == "":
		return &InvalidError{Field: "client id", Reason: "empty"}
	case c.ClientSeq < 0:
		return &InvalidError{Field: "client sequence", Reason: fmt.Sprintf("%d: negative", c.ClientSeq)}
	case !c.Decision.Valid():
		return &InvalidError{Field: "decision", Reason: fmt.Sprintf("%q: want fast-path, merged or replayed", c.Decision)}
	}
	seen := make(map[uint32]struct{}, len(c.Pages))
	for _, p := range c.Pages {
		switch {
		case p.PageNo == 0:
			return &InvalidError{Field: "page number", Reason: "0: pages are numbered from 1"}
		case p.PageNo > c.PageCount:
			return &InvalidError{Field: "page number", Reason: fmt.Sprintf("%d beyond page count %d", p.PageNo, c.PageCount)}
		case p.Segment == "":
			return &InvalidError{Field: "page location", Reason: fmt.Sprintf("page %d: no segment", p.PageNo)}
		case p.FrameOffset < 0 || p.FrameLength <= 0 || p.PageOffset < 0:
			return &InvalidError{Field: "page location", Reason: fmt.Sprintf("page %d: bad frame offset/length or page offset", p.PageNo)}
		}
		if _, dup := seen[p.PageNo]; dup {
			return &InvalidError{Field: "page number", Reason: fmt.Sprintf("%d written twice", p.PageNo)}
		}
		seen[p.PageNo] = struct{}{}
	}
	return nil
}

// MaxTokenIDLen bounds a token id; TokenSecretHashLen is the length of a
// token's stored secret hash, a SHA-256.
const (
	MaxTokenIDLen      = 64
	TokenSecretHashLen = 32
)

var tokenIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ValidateTokenID accepts 1 to MaxTokenIDLen of [A-Za-z0-9_-]: an id is part
// of the token string and shown in lists and logs, so it needs no quoting.
func ValidateTokenID(id string) error {
	if len(id) == 0 || len(id) > MaxTokenIDLen || !tokenIDRE.MatchString(id) {
		return &InvalidError{Field: "token id", Reason: fmt.Sprintf("%q: want 1-%d of [A-Za-z0-9_-]", id, MaxTokenIDLen)}
	}
	return nil
}

// ValidateToken checks the fields of t that do not need the database:
// implementations call it first in CreateToken so both refuse the same
// tokens.
func ValidateToken(t *Token) error {
	if err := ValidateTokenID(t.ID); err != nil {
		return err
	}
	if len(t.SecretHash) != TokenSecretHashLen {
		return &InvalidError{Field: "token secret hash", Reason: fmt.Sprintf("%d bytes, want %d (a SHA-256)", len(t.SecretHash), TokenSecretHashLen)}
	}
	return nil
}
