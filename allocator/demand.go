package allocator

// Heat is how contended a pool is, from its request rate.
type Heat uint8

// Heat levels, as the API names them.
const (
	HeatCold Heat = iota
	HeatWarm
	HeatHot
)

var heatNames = [...]string{"cold", "warm", "hot"}

// String returns the API's name of the heat.
func (h Heat) String() string {
	if int(h) < len(heatNames) {
		return heatNames[h]
	}
	return "unknown"
}

// DemandConfig sets a pool's heat thresholds and when carts must stop
// showing it as in stock. Integers only: the state machine never uses
// floating point, so every replica computes the same heat.
type DemandConfig struct {
	// WarmRPS and HotRPS: a pool turns warm (hot) when its reserve
	// requests per second, over the last DemandWindowMs, reach them; it
	// cools again only below half of them (hysteresis, so it does not
	// flap). Defaults 5 and 50.
	WarmRPS int64
	HotRPS  int64
	// LowStockUnits and LowStockPercent: fewer available units than
	// either makes the pool "low": carts confirm at checkout. Defaults 10
	// and 10 (%).
	LowStockUnits   int64
	LowStockPercent int64
	// HorizonMs: when the current request rate would take all available
	// units within this horizon, carts confirm at checkout. Default 60000.
	HorizonMs int64
}

// Demand defaults.
const (
	DefaultWarmRPS         = 5
	DefaultHotRPS          = 50
	DefaultLowStockUnits   = 10
	DefaultLowStockPercent = 10
	DefaultHorizonMs       = 60_000
)

// The demand window: demandBuckets one-second buckets.
const (
	demandBuckets  = 10
	demandBucketMs = 1000
	DemandWindowMs = demandBuckets * demandBucketMs
)

// demand counts a pool's reserve requests and denials per second of log
// time over a sliding window, and remembers its heat.
type demand struct {
	sec  [demandBuckets]int64 // which second each bucket holds
	req  [demandBuckets]int64
	den  [demandBuckets]int64
	heat Heat
}

func bucketOf(nowMs int64) (sec int64, b int) {
	sec = nowMs / demandBucketMs
	b = int(sec % demandBuckets)
	if b < 0 {
		b += demandBuckets
	}
	return sec, b
}

// counts sums the requests and denials of the window ending at nowMs.
func (d *demand) counts(nowMs int64) (req, den int64) {
	sec, _ := bucketOf(nowMs)
	for i := range d.sec {
		if d.sec[i] > sec-demandBuckets && d.sec[i] <= sec {
			req += d.req[i]
			den += d.den[i]
		}
	}
	return req, den
}

// heatAt is the heat at nowMs given the remembered heat: up at a
// threshold, down only below half of it.
func (d *demand) heatAt(cfg *DemandConfig, nowMs int64) Heat {
	req, _ := d.counts(nowMs)
	// req/window >= rps  <=>  req*1000 >= rps*window, in integers.
	at := func(rps int64) bool { return req*1000 >= rps*DemandWindowMs }
	switch {
	case at(cfg.HotRPS):
		return HeatHot
	case d.heat == HeatHot && req*2000 >= cfg.HotRPS*DemandWindowMs:
		return HeatHot
	case at(cfg.WarmRPS):
		return HeatWarm
	case d.heat >= HeatWarm && req*2000 >= cfg.WarmRPS*DemandWindowMs:
		return HeatWarm
	}
	return HeatCold
}

// record counts one request (denied or not) at nowMs and returns the heat
// before and after.
func (d *demand) record(cfg *DemandConfig, nowMs int64, denied bool) (before, after Heat) {
	sec, b := bucketOf(nowMs)
	if d.sec[b] != sec {
		d.sec[b], d.req[b], d.den[b] = sec, 0, 0
	}
	d.req[b]++
	if denied {
		d.den[b]++
	}
	before = d.heat
	d.heat = d.heatAt(cfg, nowMs)
	return before, d.heat
}
