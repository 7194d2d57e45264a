package replay

import (
	"errors"
	"math"
	"reflect"
	"testing"
)

func TestScanParams(t *testing.T) {
	for _, tc := range []struct {
		sql   string
		names []string
		count int
	}{
		{"UPDATE t SET a = :a WHERE id = :id", []string{"a", "id"}, 2},
		{"INSERT INTO t VALUES(:a, @a, $a); UPDATE t SET b = :b WHERE a = :a", []string{"a", "b"}, 5},
		{"SELECT ':x', \":y\", `:z`, [:w], x$y -- :c\n/* :d */ FROM t", nil, 0},
		{"SELECT 'it''s :x'", nil, 0},
	} {
		p, err := scanParams(tc.sql)
		if err != nil || !reflect.DeepEqual(p.names, tc.names) || p.count != tc.count {
			t.Fatalf("scanParams(%q)=%v %d, %v; want %v %d", tc.sql, p.names, p.count, err, tc.names, tc.count)
		}
	}
	for _, bad := range []string{"SELECT ?", "SELECT ?1", "SELECT :1a", "SELECT #x", "SELECT $a::b", "SELECT $a(b)", "SELECT :é"} {
		if _, err := scanParams(bad); !errors.Is(err, ErrMutator) {
			t.Errorf("scanParams(%q)=%v, want ErrMutator", bad, err)
		}
	}
}

func TestJSONValue(t *testing.T) {
	for in, want := range map[string]any{
		`null`:                 nil,
		`true`:                 int64(1),
		`false`:                int64(0),
		`"héllo"`:              "héllo",
		`42`:                   int64(42),
		`-7`:                   int64(-7),
		`3.0`:                  int64(3),
		`1e3`:                  int64(1000),
		`2.5`:                  2.5,
		`9223372036854775807`:  int64(math.MaxInt64),
		`9223372036854775808`:  float64(1 << 63),
		`1e300`:                1e300,
		` { "a" : [1, 2] } `:   `{"a":[1,2]}`,
		`[true, null, "x"]`:    `[true,null,"x"]`,
		`-9223372036854775808`: int64(math.MinInt64),
	} {
		got, err := jsonValue([]byte(in))
		if err != nil || got != want {
			t.Errorf("jsonValue(%s)=%#v, %v; want %#v", in, got, err, want)
		}
	}
}

func TestBindArgs(t *testing.T) {
	p, err := scanParams("UPDATE t SET a = :a; UPDATE t SET a = :a, b = :b")
	if err != nil {
		t.Fatal(err)
	}
	args, err := bindArgs(p, []byte(`{"a": 1, "b": "x", "unused": {}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != p.count {
		t.Fatalf("%d arguments, want %d (one per parameter token)", len(args), p.count)
	}
	for _, bad := range []string{`[]`, `"x"`, `{"a": 1}`, `{"a": 1, "b": 1e999}`, `{bad json`} {
		if _, err := bindArgs(p, []byte(bad)); !errors.Is(err, ErrMutationArgs) {
			t.Errorf("bindArgs(%s)=%v, want ErrMutationArgs", bad, err)
		}
	}
	if _, err := bindArgs(sqlParams{}, nil); err != nil {
		t.Fatalf("no parameters, no arguments: %v", err)
	}
}
