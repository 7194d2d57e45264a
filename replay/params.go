package replay

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sqlParams is what scanParams found in a SQL mutator.
type sqlParams struct {
	names []string // distinct parameter names, in order of first use
	count int      // parameter tokens in all, repeats included
}

// scanParams finds the parameters of a SQL mutator the way SQLite's
// tokenizer does (sqlite3GetToken): outside string literals, quoted
// identifiers and comments, a ':', '@' or '$' followed by identifier
// characters. Errors wrap ErrMutator.
func scanParams(query string) (sqlParams, error) {
	var p sqlParams
	seen := map[string]bool{}
	for i := 0; i < len(query); {
		c := query[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			i = skipQuoted(query, i, c)
		case c == '[':
			i = skipPast(query, i+1, "]")
		case c == '-' && i+1 < len(query) && query[i+1] == '-':
			i = skipPast(query, i+2, "\n")
		case c == '/' && i+1 < len(query) && query[i+1] == '*':
			i = skipPast(query, i+2, "*/")
		case c == '?':
			return p, fmt.Errorf("positional parameter at byte %d: use :name: %w", i, ErrMutator)
		case c == ':' || c == '@' || c == '$' || c == '#':
			j := i + 1
			for j < len(query) && isIDChar(query[j]) {
				j++
			}
			if j == i+1 {
				i++ // not a parameter; SQLite will say what it is
				continue
			}
			if j < len(query) && (query[j] == '(' || query[j] == ':') || c == '#' {
				return p, fmt.Errorf("parameter %q at byte %d: only :name, @name and $name are supported: %w", query[i:j], i, ErrMutator)
			}
			name := query[i+1 : j]
			if !isParamName(name) {
				return p, fmt.Errorf("parameter %q at byte %d: names must match [A-Za-z][A-Za-z0-9_]*: %w", query[i:j], i, ErrMutator)
			}
			p.count++
			if !seen[name] {
				seen[name] = true
				p.names = append(p.names, name)
			}
			i = j
		case isIDChar(c):
			// A whole identifier or number: '$' inside one (x$y) is no parameter.
			for i < len(query) && isIDChar(query[i]) {
				i++
			}
		default:
			i++
		}
	}
	return p, nil
}

// skipQuoted returns the index just past the literal opened at query[i]
// by quote, where a doubled quote stands for itself.
func skipQuoted(query string, i int, quote byte) int {
	for i++; i < len(query); i++ {
		if query[i] == quote {
			if i+1 < len(query) && query[i+1] == quote {
				i++
				continue
			}
			return i + 1
		}
	}
	return len(query)
}

// skipPast returns the index just past the first end at or after i, or
// len(query).
func skipPast(query string, i int, end string) int {
	if j := strings.Index(query[i:], end); j >= 0 {
		return i + j + len(end)
	}
	return len(query)
}

// isIDChar is SQLite's IdChar: letters, digits, '_', '$' and every byte
// of a multi-byte UTF-8 character.
func isIDChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '$' || c >= 0x80
}

// isParamName reports whether name matches [A-Za-z][A-Za-z0-9_]*, which
// database/sql accepts as a named argument and a JSON key can carry.
func isParamName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '_')) {
			return false
		}
	}
	return name != ""
}

// bindArgs returns the arguments for one ExecContext of a SQL mutator:
// one named argument per parameter, from the JSON object args, then
// unmatchable named padding up to the number of parameter tokens.
// mattn runs a multi-statement string by handing each statement the next
// NumInput arguments (and every named one), failing when fewer remain, so
// the padding keeps a parameter repeated across statements bindable.
// Errors wrap ErrMutationArgs.
func bindArgs(p sqlParams, args json.RawMessage) ([]any, error) {
	obj := map[string]json.RawMessage{}
	if trimmed := bytes.TrimSpace(args); len(trimmed) > 0 && !bytes.Equal(trimmed, []byte("null")) {
		if trimmed[0] != '{' {
			return nil, fmt.Errorf("arguments must be a JSON object: %w", ErrMutationArgs)
		}
		if err := json.Unmarshal(trimmed, &obj); err != nil {
			return nil, fmt.Errorf("arguments: %v: %w", err, ErrMutationArgs)
		}
	}
	out := make([]any, 0, p.count)
	for _, name := range p.names {
		raw, ok := obj[name]
		if !ok {
			return nil, fmt.Errorf("argument %q missing (pass null for NULL): %w", name, ErrMutationArgs)
		}
		v, err := jsonValue(raw)
		if err != nil {
			return nil, fmt.Errorf("argument %q: %v: %w", name, err, ErrMutationArgs)
		}
		out = append(out, sql.Named(name, v))
	}
	for i := len(out); i < p.count; i++ {
		// '-' cannot occur in a parameter name: this binds nothing.
		out = append(out, sql.Named(fmt.Sprintf("cambium-pad-%d", i), nil))
	}
	return out, nil
}

// jsonValue converts one JSON value to what it binds as (see Mutator).
func jsonValue(raw json.RawMessage) (any, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, fmt.Errorf("empty value")
	}
	switch raw[0] {
	case 'n':
		return nil, nil
	case 't':
		return int64(1), nil
	case 'f':
		return int64(0), nil
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return s, nil
	case '{', '[':
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			return nil, err
		}
		return b.String(), nil
	}
	s := string(raw)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, err
	}
	// 2^63 is exactly representable; every float below it in magnitude
	// with no fraction fits in an int64.
	if f == math.Trunc(f) && f >= -(1<<63) && f < 1<<63 {
		return int64(f), nil
	}
	return f, nil
}
