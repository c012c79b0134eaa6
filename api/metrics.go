package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/allocator"
)

type metrics struct {
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	reservations *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, alloc *allocator.Machine) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_http_requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "holdfast_http_request_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17),
		}, []string{"route"}),
		reservations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_reservations_total",
			Help: "Reservation requests answered by this node, by outcome (held, replayed, or the refusal code).",
		}, []string{"outcome"}),
	}
	stat := func(f func(allocator.Stats) float64) func() float64 {
		return func() float64 { return f(alloc.Stats()) }
	}
	reg.MustRegister(m.requests, m.latency, m.reservations,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "holdfast_active_holds",
			Help: "Active reservations (units held) in this replica.",
		}, stat(func(s allocator.Stats) float64 { return float64(s.ActiveHolds) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "holdfast_expirations_total",
			Help: "Holds expired in this replica since it started.",
		}, stat(func(s allocator.Stats) float64 { return float64(s.Expired) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "holdfast_idempotency_keys",
			Help: "Idempotency keys remembered in this replica.",
		}, stat(func(s allocator.Stats) float64 { return float64(s.IdempotencyKeys) })),
	)
	return m
}

func (m *metrics) observe(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

func (m *metrics) reservation(r *allocator.Result) {
	outcome := "held"
	switch {
	case r.Replayed:
		outcome = "replayed"
	case r.Err != nil:
		outcome = r.Err.Code.String()
	}
	m.reservations.WithLabelValues(outcome).Inc()
}
