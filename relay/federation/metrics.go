package federation

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quicproquo/qpq/relay/store"
)

// metrics are the federation's Prometheus collectors, all prefixed
// qpq_federation_.
type metrics struct {
	calls   *prometheus.CounterVec // incoming, by peer, method and result code
	relayed *prometheus.CounterVec // outgoing deliveries, by peer and result
	refused *prometheus.CounterVec // connections refused, by reason
}

func newMetrics(reg prometheus.Registerer, st *store.Store, peers []Peer) *metrics {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qpq_federation_calls_total", Help: "FederationService calls answered for peers, by peer, method and result code.",
		}, []string{"peer", "method", "code"}),
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qpq_federation_relayed_total", Help: "Deliveries sent to peers, by peer and result: ok, duplicate (applied before), retry (unreachable or busy; sent again later), dropped (refused for good).",
		}, []string{"peer", "result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qpq_federation_refused_connections_total", Help: "Incoming connections refused, by reason.",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.calls, m.relayed, m.refused)
	for _, p := range peers {
		domain := p.Domain
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "qpq_federation_queued",
			Help:        "Deliveries waiting for a peer.",
			ConstLabels: prometheus.Labels{"peer": domain},
		}, func() float64 {
			n, _ := st.RelayQueued(domain)
			return float64(n)
		}))
	}
	return m
}
