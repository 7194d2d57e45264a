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
	reg.MustRegister(m.decisions, m.groups, m.groupSize, m.groupDelay, m.replays)
	return m
}

func (m *Metrics) observeGroup(group []*unit, err error, d time.Duration) {
	if err != nil {
		m.groups.WithLabelValues("error").Inc()
		return
	}
	m.groups.WithLabelValues("ok").Inc()
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
