package bench

import (
	"encoding/xml"
	"strings"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	for _, c := range []struct {
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{ms(7), 0.99, 7 * time.Millisecond},
		{ms(3, 1, 2), 0.5, 2 * time.Millisecond},
		{ms(4, 3, 2, 1), 0.5, 2 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
	} {
		if got := quantile(c.in, c.q); got != c.want {
			t.Errorf("quantile(%v, %v) = %v, want %v", c.in, c.q, got, c.want)
		}
	}
	big := make([]time.Duration, 1000)
	for i := range big {
		big[i] = time.Duration(1000 - i)
	}
	if got := quantile(big, 0.99); got != 990 {
		t.Errorf("p99 of 1..1000 = %d, want 990", got)
	}
}

// TestBarChart_SVG: missing values draw "n/a" instead of a bar, labels are
// escaped, and the result is XML.
func TestBarChart_SVG(t *testing.T) {
	c := &barChart{Title: "a < b & c", YLabel: "ms", Groups: []string{"g1", "g2"}, Series: []string{"s1", "s2"},
		Values: [][]float64{{1.5, 0}, {2000, 30}}, Upper: [][]float64{{3, 0}, {2500, 0}}}
	b := c.SVG()
	if err := xml.Unmarshal(b, new(struct{})); err != nil {
		t.Fatalf("not XML: %v\n%s", err, b)
	}
	s := string(b)
	if !strings.Contains(s, "a &lt; b &amp; c") {
		t.Error("title not escaped")
	}
	if n := strings.Count(s, ">n/a<"); n != 1 {
		t.Errorf("%d n/a labels, want 1", n)
	}
	if lo, hi := c.bounds(); lo != 1 || hi != 10000 {
		t.Errorf("bounds %v..%v, want 1..10000", lo, hi)
	}
}
