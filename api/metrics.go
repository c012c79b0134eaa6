package api

import (
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/cart"
)

type metrics struct {
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	reservations *prometheus.CounterVec
	outcomes     counterCache // reservations' children by outcome
	merges       *prometheus.CounterVec
	conflicts    prometheus.Counter
	checkouts    *prometheus.CounterVec
	corrections  prometheus.Counter
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
			Help: "Reservation requests answered by this node, by outcome (held, queued, replayed, or the refusal code).",
		}, []string{"outcome"}),
	}
	m.merges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_cart_merge_lines_total",
		Help: "Lines reported by cart merges answered by this node, by outcome class.",
	}, []string{"outcome"})
	m.conflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "holdfast_cart_version_conflicts_total",
		Help: "Cart edits refused for a stale cart or line version.",
	})
	m.checkouts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_checkout_starts_total",
		Help: "Checkout starts answered by this node, by result (held, partial, or the refusal code).",
	}, []string{"result"})
	m.corrections = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "holdfast_checkout_corrections_total",
		Help: "Checkout lines that could not be held (in a snapshot's corrections or a refusal's details).",
	})
	reg.MustRegister(m.requests, m.latency, m.reservations, m.merges, m.conflicts, m.checkouts, m.corrections, &allocCollector{alloc: alloc})
	m.outcomes.vec = m.reservations
	return m
}

// counterCache keeps the children of a one-label CounterVec by label
// value in a copy-on-write map, so a hit costs one map read instead of
// the vec's label hashing. Children are made on first use, as with
// WithLabelValues, so no series appears before it counts something.
type counterCache struct {
	vec *prometheus.CounterVec
	mu  sync.Mutex
	m   atomic.Pointer[map[string]prometheus.Counter]
}

func (c *counterCache) get(label string) prometheus.Counter {
	if m := c.m.Load(); m != nil {
		if ctr, ok := (*m)[label]; ok {
			return ctr
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if ctr, ok := (*old)[label]; ok {
			return ctr
		}
	}
	ctr := c.vec.WithLabelValues(label)
	next := make(map[string]prometheus.Counter, 1)
	if old != nil {
		maps.Copy(next, *old)
	}
	next[label] = ctr
	c.m.Store(&next)
	return ctr
}

// routeMetrics are one route's series, cached: its latency histogram and
// its request counter per status code, so a request costs neither a
// label lookup nor strconv.Itoa. Both are made on first use.
type routeMetrics struct {
	m    *metrics
	name string

	latencyOnce sync.Once
	latency     prometheus.Observer

	mu       sync.Mutex
	byStatus atomic.Pointer[[]statusCounter] // copy on write
}

type statusCounter struct {
	status int
	c      prometheus.Counter
}

// maxStatusesCached bounds byStatus; a route answering with more distinct
// codes (it does not happen) looks the rest up each time.
const maxStatusesCached = 16

func (m *metrics) route(name string) *routeMetrics { return &routeMetrics{m: m, name: name} }

func (r *routeMetrics) observe(status int, d time.Duration) {
	r.counter(status).Inc()
	r.latencyOnce.Do(func() { r.latency = r.m.latency.WithLabelValues(r.name) })
	r.latency.Observe(d.Seconds())
}

func (r *routeMetrics) counter(status int) prometheus.Counter {
	if p := r.byStatus.Load(); p != nil {
		for _, sc := range *p {
			if sc.status == status {
				return sc.c
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var cur []statusCounter
	if p := r.byStatus.Load(); p != nil {
		cur = *p
		for _, sc := range cur {
			if sc.status == status {
				return sc.c
			}
		}
	}
	c := r.m.requests.WithLabelValues(r.name, strconv.Itoa(status))
	if len(cur) < maxStatusesCached {
		next := append(cur[:len(cur):len(cur)], statusCounter{status, c})
		r.byStatus.Store(&next)
	}
	return c
}

func (m *metrics) cartResult(kind cart.Kind, r *cart.Result) {
	if r.Replayed {
		return
	}
	if r.Err != nil && r.Err.Code == allocator.VersionConflict {
		m.conflicts.Inc()
	}
	switch kind {
	case cart.KindMerge:
		for i := range r.Report {
			m.merges.WithLabelValues(r.Report[i].Outcome.String()).Inc()
		}
	case cart.KindCheckout:
		result := "held"
		corrections := len(r.Corrections)
		switch {
		case r.Err != nil:
			result = r.Err.Code.String()
		case r.Checkout != nil && len(r.Checkout.Corrections) > 0:
			result = "partial"
			corrections = len(r.Checkout.Corrections)
		}
		m.checkouts.WithLabelValues(result).Inc()
		m.corrections.Add(float64(corrections))
	}
}

func (m *metrics) reservation(r *allocator.Result) {
	outcome := "held"
	switch {
	case r.Replayed:
		outcome = "replayed"
	case r.Err != nil:
		outcome = r.Err.Code.String()
	case r.Reservation != nil && r.Reservation.State == allocator.StateWaiting:
		outcome = "queued"
	}
	m.outcomes.get(outcome).Inc()
}

// hotPoolsLabelled bounds the pool label's cardinality: only the busiest
// hot pools are exported one by one.
const hotPoolsLabelled = 10

// allocCollector exports the replica's allocator state at scrape time.
//
// Reading it costs: Stats walks every pool under the allocator's read
// lock, which holds off apply (about 0.3 s for a million pools on a
// 2-core machine). So scrapes share reads: one at a time, and after a
// read that took d, scrapes within scrapeDutyFactor*d reuse it. However
// many scrapers come, they hold the lock at most 1/(1+scrapeDutyFactor)
// of the time; with few pools (microseconds) every scrape is fresh.
type allocCollector struct {
	alloc *allocator.Machine

	mu      sync.Mutex
	readAt  time.Time // when the last read ended
	took    time.Duration
	stats   allocator.Stats
	hot     []*allocator.PoolView
	reads   int           // for tests
	readDur time.Duration // total, for tests
}

// scrapeDutyFactor bounds the share of time scrapes hold the allocator's
// read lock (see allocCollector).
const scrapeDutyFactor = 10

// read returns the allocator's counters and hottest pools, read now or
// shared from a recent read.
func (c *allocCollector) read() (allocator.Stats, []*allocator.PoolView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reads > 0 && time.Since(c.readAt) < scrapeDutyFactor*c.took {
		return c.stats, c.hot
	}
	start := time.Now()
	c.stats, c.hot = c.alloc.Stats(), c.alloc.HotPools(hotPoolsLabelled)
	c.readAt = time.Now()
	c.took = c.readAt.Sub(start)
	c.reads++
	c.readDur += c.took
	return c.stats, c.hot
}

var (
	descActiveHolds   = prometheus.NewDesc("holdfast_active_holds", "Active reservations (units held) in this replica.", nil, nil)
	descWaiting       = prometheus.NewDesc("holdfast_waitlist_length", "Reservations waiting in waitlists, all pools.", nil, nil)
	descExpirations   = prometheus.NewDesc("holdfast_expirations_total", "Holds and waits expired in this replica since it started.", nil, nil)
	descOffers        = prometheus.NewDesc("holdfast_waitlist_offers_total", "Units offered to the head of a waitlist (draw winners included).", nil, nil)
	descOffersExpired = prometheus.NewDesc("holdfast_waitlist_offers_expired_total", "Offers that expired unconfirmed and moved on.", nil, nil)
	descWaitsExpired  = prometheus.NewDesc("holdfast_waitlist_waits_expired_total", "Waiting reservations that expired unserved.", nil, nil)
	descDrawEntries   = prometheus.NewDesc("holdfast_draw_entries_total", "Draw entries accepted.", nil, nil)
	descDrawWinners   = prometheus.NewDesc("holdfast_draw_winners_total", "Draw entries that won at the close.", nil, nil)
	descQueueJumps    = prometheus.NewDesc("holdfast_queue_jumps_total", "Grants made while an earlier waiting request for the same pool still fit. Must stay 0.", nil, nil)
	descIdemKeys      = prometheus.NewDesc("holdfast_idempotency_keys", "Idempotency keys remembered in this replica.", nil, nil)
	descLeaseTables   = prometheus.NewDesc("holdfast_lease_tables", "Lease tables: the shared one plus one per hot pool.", nil, nil)
	descHeat          = prometheus.NewDesc("holdfast_pool_heat", "Heat of the busiest hot pools (0 cold, 1 warm, 2 hot).", []string{"pool"}, nil)
	descPoolRPS       = prometheus.NewDesc("holdfast_pool_requests_per_second", "Reserve requests per second of the busiest hot pools.", []string{"pool"}, nil)
)

func (c *allocCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActiveHolds, descWaiting, descExpirations, descOffers, descOffersExpired,
		descWaitsExpired, descDrawEntries, descDrawWinners, descQueueJumps, descIdemKeys, descLeaseTables, descHeat, descPoolRPS} {
		ch <- d
	}
}

func (c *allocCollector) Collect(ch chan<- prometheus.Metric) {
	s, hot := c.read()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descActiveHolds, float64(s.ActiveHolds))
	gauge(descWaiting, float64(s.Waiting))
	gauge(descIdemKeys, float64(s.IdempotencyKeys))
	gauge(descLeaseTables, float64(s.LeaseTables))
	counter(descExpirations, s.Expired)
	counter(descOffers, s.Offers)
	counter(descOffersExpired, s.OffersExpired)
	counter(descWaitsExpired, s.WaitsExpired)
	counter(descDrawEntries, s.DrawEntries)
	counter(descDrawWinners, s.DrawWinners)
	counter(descQueueJumps, s.QueueJumps)
	for _, p := range hot {
		ch <- prometheus.MustNewConstMetric(descHeat, prometheus.GaugeValue, float64(p.Heat), p.ID)
		ch <- prometheus.MustNewConstMetric(descPoolRPS, prometheus.GaugeValue, p.RequestsPerSec, p.ID)
	}
}
