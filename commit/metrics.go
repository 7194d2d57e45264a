package commit

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the commit path's Prometheus metrics. Register them once per
// process with NewMetrics.
type Metrics struct {
	decisions  *prometheus.CounterVec
	groups     *prometheus.CounterVec
	segments   *prometheus.CounterVec
	groupSize  prometheus.Histogram
	groupDelay prometheus.Histogram
	replays    *prometheus.HistogramVec
}

// NewMetrics creates the commit metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cambium_commit_decisions_total",
			Help: "Commits decided, by decision (fast-path, merged, replayed, rejected) and whether they were idempotent retries.",
		}, []string{"decision", "duplicate"}),
		groups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cambium_commit_groups_total",
			Help: "Group commits attempted, by outcome (ok, error).",
		}, []string{"outcome"}),
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cambium_commit_segments_total",
			Help: "Segments group commit uploaded, by upload: ahead (before the decisions, pages filed under predicted versions), locked (under the volume locks, for accepted commits the prediction missed), unused (ahead, then used by no commit and deleted).",
		}, []string{"upload"}),
		groupSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cambium_commit_group_commits",
			Help:    "Commits per group commit (one segment upload and one metadata transaction).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		groupDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cambium_commit_group_seconds",
			Help:    "Time to upload a group's segment and commit its metadata.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	m.replays = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cambium_replay_seconds",
		Help:    "Time to replay a stale commit's record on head, by outcome (replayed, rejected, error).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"outcome"})
	reg.MustRegister(m.decisions, m.groups, m.segments, m.groupSize, m.groupDelay, m.replays)
	return m
}

func (m *Metrics) observeGroup(group []*unit, up uploads, err error, d time.Duration) {
	m.segments.WithLabelValues("unused").Add(float64(len(up.unused)))
	if err != nil {
		m.groups.WithLabelValues("error").Inc()
		return
	}
	m.groups.WithLabelValues("ok").Inc()
	m.segments.WithLabelValues("ahead").Add(float64(up.ahead))
	m.segments.WithLabelValues("locked").Add(float64(up.locked))
	n := 0
	for _, u := range group {
		for _, r := range u.results {
			dup := "false"
			if r.Duplicate {
				dup = "true"
			}
			m.decisions.WithLabelValues(string(r.Decision), dup).Inc()
			n++
		}
	}
	m.groupSize.Observe(float64(n))
	m.groupDelay.Observe(d.Seconds())
}

func (m *Metrics) observeReplay(outcome string, d time.Duration) {
	if m != nil {
		m.replays.WithLabelValues(outcome).Observe(d.Seconds())
	}
}
