package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// barChart is a grouped bar chart on a logarithmic axis, drawn as SVG by
// hand: one group per workload, one bar per strategy.
type barChart struct {
	Title  string
	YLabel string
	Groups []string    // x axis
	Series []string    // bars in each group, with a legend
	Values [][]float64 // [group][series]; a value <= 0 draws no bar ("n/a")
	Upper  [][]float64 // optional [group][series] upper value drawn as a whisker (p99 over p50)
	Format func(float64) string
}

// seriesColors are colour-blind-safe (Okabe-Ito), by strategy order.
var seriesColors = []string{"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9"}

const (
	chartW, chartH                     = 960, 460
	marginL, marginR, marginT, marginB = 80, 20, 56, 90
)

func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// bounds returns the decades that enclose every positive value.
func (c *barChart) bounds() (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for g := range c.Values {
		for s, v := range c.Values[g] {
			for _, x := range []float64{v, c.upper(g, s)} {
				if x > 0 {
					lo, hi = math.Min(lo, x), math.Max(hi, x)
				}
			}
		}
	}
	if math.IsInf(lo, 1) {
		return 1, 10
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	return lo, hi
}

func (c *barChart) upper(g, s int) float64 {
	if c.Upper == nil || g >= len(c.Upper) || s >= len(c.Upper[g]) {
		return 0
	}
	return c.Upper[g][s]
}

// SVG renders the chart.
func (c *barChart) SVG() []byte {
	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	lo, hi := c.bounds()
	plotW, plotH := float64(chartW-marginL-marginR), float64(chartH-marginT-marginB)
	y := func(v float64) float64 {
		return float64(marginT) + plotH*(1-(math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo)))
	}
	format := c.Format
	if format == nil {
		format = func(v float64) string { return fmt.Sprintf("%.3g", v) }
	}
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", chartW, chartH, chartW, chartH)
	p(`<title>%s</title>`+"\n", esc(c.Title))
	p(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	p(`<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", marginL, esc(c.Title))
	p(`<text transform="translate(18,%.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", float64(marginT)+plotH/2, esc(c.YLabel))
	// Grid: a line per 1, 2 and 5 of each decade; labels on decades.
	for d := lo; d <= hi*1.0001; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := d * m
			if v > hi*1.0001 {
				break
			}
			yy := y(v)
			stroke, width := "#e5e5e5", 1.0
			if m == 1 {
				stroke = "#bdbdbd"
				p(`<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", marginL-6, yy, esc(decade(v)))
			}
			p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f"/>`+"\n", marginL, chartW-marginR, yy, yy, stroke, width)
		}
	}
	groupW := plotW / float64(max(1, len(c.Groups)))
	barW := groupW * 0.8 / float64(max(1, len(c.Series)))
	for g, name := range c.Groups {
		gx := float64(marginL) + groupW*float64(g)
		p(`<text x="%.1f" y="%d" text-anchor="middle" font-weight="bold">%s</text>`+"\n", gx+groupW/2, chartH-marginB+18, esc(name))
		for s := range c.Series {
			x := gx + groupW*0.1 + barW*float64(s)
			v := 0.0
			if g < len(c.Values) && s < len(c.Values[g]) {
				v = c.Values[g][s]
			}
			if v <= 0 {
				p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10" fill="#757575">n/a</text>`+"\n", x+barW/2, float64(marginT)+plotH-4)
				continue
			}
			top := y(v)
			color := seriesColors[s%len(seriesColors)]
			p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s, %s: %s</title></rect>`+"\n",
				x+1, top, barW-2, float64(marginT)+plotH-top, color, esc(name), esc(c.Series[s]), esc(format(v)))
			if u := c.upper(g, s); u > v {
				uy := y(u)
				cx := x + barW/2
				p(`<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#212121" stroke-width="1.5"/>`+"\n", cx, cx, top, uy)
				p(`<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#212121" stroke-width="1.5"><title>p99: %s</title></line>`+"\n", cx-barW/4, cx+barW/4, uy, uy, esc(format(u)))
				p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9" fill="#616161">%s</text>`+"\n", cx, uy-3, esc(format(u)))
			}
			if bottom := float64(marginT) + plotH; c.Upper != nil && bottom-top > 16 {
				// Inside the bar's top, clear of the whisker's label.
				p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10" fill="#ffffff">%s</text>`+"\n", x+barW/2, top+12, esc(format(v)))
			} else {
				// A white halo keeps the label legible over a grid line.
				p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10" stroke="#ffffff" stroke-width="3" paint-order="stroke">%s</text>`+"\n", x+barW/2, top-4, esc(format(v)))
			}
		}
	}
	p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#424242"/>`+"\n", marginL, chartW-marginR, float64(marginT)+plotH, float64(marginT)+plotH)
	p(`<line x1="%d" x2="%d" y1="%d" y2="%.1f" stroke="#424242"/>`+"\n", marginL, marginL, marginT, float64(marginT)+plotH)
	// Legend, one row under the groups.
	lx := float64(marginL)
	for s, name := range c.Series {
		p(`<rect x="%.1f" y="%d" width="14" height="14" fill="%s"/>`+"\n", lx, chartH-34, seriesColors[s%len(seriesColors)])
		p(`<text x="%.1f" y="%d">%s</text>`+"\n", lx+20, chartH-22, esc(name))
		lx += 30 + 8*float64(len(name))
	}
	if c.Upper != nil {
		p(`<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#212121" stroke-width="1.5"/>`+"\n", lx+7, lx+7, chartH-36, chartH-20)
		p(`<text x="%.1f" y="%d">bar: p50, whisker: p99</text>`+"\n", lx+20, chartH-22)
	}
	p("</svg>\n")
	return b.Bytes()
}

// decade labels a power of ten: 0.01, 0.1, 1, 10, 100, 1,000...
func decade(v float64) string {
	if v >= 1 {
		return commas(int64(v + 0.5))
	}
	return strconv.FormatFloat(v, 'g', 1, 64)
}
