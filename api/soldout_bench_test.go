package api_test

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkHTTPSoldOut is the drop after the sell-out: 64 clients (one
// node, fsync on) ask a sold-out pool for a unit, each request a new buyer
// under its own Idempotency-Key, every answer 409 sold_out. "fast" is the
// default (the leader answers from its state and records the refusals in
// batches); "log" sends every request through the log.
//
//	go test ./api -run '^$' -bench BenchmarkHTTPSoldOut -benchtime 40000x
func BenchmarkHTTPSoldOut(b *testing.B) {
	for _, mode := range []struct {
		name    string
		disable bool
	}{{"fast", false}, {"log", true}} {
		b.Run(mode.name, func(b *testing.B) {
			s := benchSettingsFromEnv(b)
			s.disableFast = mode.disable
			benchSoldOut(b, s)
		})
	}
}

func benchSoldOut(b *testing.B, s benchSettings) {
	b.ReportAllocs()
	n := startBenchNode(b, s)
	hc := &fasthttp.HostClient{Addr: n.httpAddr, MaxConns: max(2*s.clients, 64), ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, MaxIdemponentCallAttempts: 1}
	defer hc.CloseIdleConnections()
	base := "http://" + n.httpAddr
	setup := newBenchClient(hc, base)
	for _, rq := range []struct{ method, path, body string }{
		{"PUT", "/v1/pools/drop", `{"on_hand":1,"per_buyer_limit":1}`},
		{"POST", "/v1/reservations", `{"buyer":"first","lines":[{"pool":"drop","qty":1}],"ttl_ms":900000}`},
	} {
		if st, _, err := setup.do(rq.method, rq.path, []byte(rq.body), nil); st != fasthttp.StatusCreated {
			b.Fatalf("%s %s: %d %s %v", rq.method, rq.path, st, setup.resp.Body(), err)
		}
	}
	setup.release()
	refused0 := n.machine.Alloc.Stats().Refused

	lats := make([][]time.Duration, s.clients)
	var errs atomic.Int64
	var firstErr atomic.Value
	var next atomic.Int64
	var wg sync.WaitGroup
	cpu0 := processCPU()
	b.ResetTimer()
	start := time.Now()
	for g := range s.clients {
		wg.Go(func() {
			c := newBenchClient(hc, base)
			defer c.release()
			var body, key []byte
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				body = strconv.AppendInt(append(body[:0], `{"buyer":"buyer-`...), i, 10)
				body = append(body, `","lines":[{"pool":"drop","qty":1}]}`...)
				key = strconv.AppendInt(append(key[:0], "so-"...), i, 10)
				status, d, err := c.do("POST", "/v1/reservations", body, key)
				lats[g] = append(lats[g], d)
				if status != fasthttp.StatusConflict {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, strconv.Itoa(status)+" "+string(c.resp.Body())+" "+errString(err))
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := processCPU() - cpu0
	if e := firstErr.Load(); e != nil {
		b.Fatalf("%d answers other than 409, first: %v", errs.Load(), e)
	}
	// Every refusal is recorded (demand counts, idempotency keys) soon.
	deadline := time.Now().Add(10 * time.Second)
	for n.machine.Alloc.Stats().Refused-refused0 != uint64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d refusals recorded, want %d", n.machine.Alloc.Stats().Refused-refused0, b.N)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var lat []time.Duration
	for _, l := range lats {
		lat = append(lat, l...)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "refusals/s")
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
}
