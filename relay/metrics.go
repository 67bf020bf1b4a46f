package relay

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quicproquo/qpq/relay/store"
)

// metrics are the relay's Prometheus collectors, all prefixed qpq_relay_.
type metrics struct {
	calls       *prometheus.CounterVec // by method and result code ("ok" on success)
	enqueued    prometheus.Counter
	fetched     prometheus.Counter
	logins      *prometheus.CounterVec // by result
	rateLimited *prometheus.CounterVec // by limit
	connections prometheus.Gauge
	waiters     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, st *store.Store) *metrics {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qpq_relay_calls_total", Help: "NodeService calls answered, by method and result code.",
		}, []string{"method", "code"}),
		enqueued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qpq_relay_enqueued_messages_total", Help: "Messages committed to inboxes (one per recipient).",
		}),
		fetched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qpq_relay_fetched_messages_total", Help: "Messages drained from inboxes by fetch and fetchWait.",
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qpq_relay_logins_total", Help: "OPAQUE logins, by result: ok, failed (bad KE3 or expired), denied (wrong identity key), abandoned (never finished).",
		}, []string{"result"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qpq_relay_rate_limited_total", Help: "Calls refused by a rate limit, by limit.",
		}, []string{"limit"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "qpq_relay_connections", Help: "Open client connections.",
		}),
		waiters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "qpq_relay_fetch_waiters", Help: "fetchWait calls currently waiting.",
		}),
	}
	reg.MustRegister(m.calls, m.enqueued, m.fetched, m.logins, m.rateLimited, m.connections, m.waiters,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "qpq_relay_queued_messages", Help: "Messages waiting in all inboxes.",
		}, func() float64 { return float64(st.Queued()) }),
		// The group commit: every acknowledged write waits for a commit,
		// so seconds/commits is the floor of a write's latency and
		// writes/commits how much concurrent writers share.
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "qpq_relay_store_commits_total", Help: "Transactions committed to disk (group commits).",
		}, func() float64 { return float64(st.CommitStats().Commits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "qpq_relay_store_commit_writes_total", Help: "Writes carried by those commits (one per acknowledged write call).",
		}, func() float64 { return float64(st.CommitStats().Writes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "qpq_relay_store_commit_seconds_total", Help: "Time spent in transactions, building and syncing them.",
		}, func() float64 { return st.CommitStats().Time.Seconds() }))
	return m
}
