package relay

import (
	"github.com/prometheus/client_golang/prometheus"
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

func newMetrics(reg prometheus.Registerer, queued func() float64) *metrics {
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
		}, queued))
	return m
}
