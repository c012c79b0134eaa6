package api_test

// HTTP benchmarks of the cart layer on one node (fsync on, Raft and the API
// on loopback), with concurrent fasthttp clients (HOLDFAST_BENCH_CLIENTS,
// default 64; the other knobs of bench_test.go apply too):
//
//	go test ./api -run '^$' -bench 'BenchmarkCart' -benchtime 20000x
//
//	BenchmarkCartAdd    POST /v1/carts/{id}/lines: each client adds to its own
//	                    16 carts, over 40 identities per cart (new lines, then
//	                    adds to existing ones), with an Idempotency-Key each
//	BenchmarkCartRead   GET /v1/carts/{id} (local replica, decorated with each
//	                    line's claim): 1,000 carts of 5 lines, on pools that exist
//	BenchmarkCartMerge  POST /v1/carts/{target}/merge of a fresh 3-line source
//	                    cart (made before the timer) into the client's target,
//	                    policy sum
//
// b.N is the number of measured requests. Reported: ops/s, client-observed
// p50/p99/p999/max latency in ms, errors (answers other than the expected
// status, and transport errors) and, for writes, commands per log entry.

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// cartBench is one benchmark's node and client pool.
type cartBench struct {
	s    benchSettings
	n    *benchNode
	hc   *fasthttp.HostClient
	base string
}

func newCartBench(b *testing.B) *cartBench {
	s := benchSettingsFromEnv(b)
	n := startBenchNode(b, s)
	hc := &fasthttp.HostClient{
		Addr:                      n.httpAddr,
		MaxConns:                  max(2*s.clients, 64),
		ReadTimeout:               10 * time.Second,
		WriteTimeout:              10 * time.Second,
		MaxIdemponentCallAttempts: 1,
	}
	b.Cleanup(hc.CloseIdleConnections)
	return &cartBench{s: s, n: n, hc: hc, base: "http://" + n.httpAddr}
}

// cartOp sends request i from client g and says whether it succeeded.
type cartOp func(c *benchClient, g, i int) (status int, d time.Duration, err error, ok bool)

type cartRun struct {
	lat      []time.Duration
	errors   int64
	firstErr string
	elapsed  time.Duration
}

// parallel runs op for i in [0, total) over the clients and returns every
// request's latency and the failures.
func (cb *cartBench) parallel(total int, op cartOp) cartRun {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var run cartRun
	start := time.Now()
	for g := range cb.s.clients {
		wg.Go(func() {
			c := newBenchClient(cb.hc, cb.base)
			defer c.release()
			lat := make([]time.Duration, 0, total/cb.s.clients+1)
			var errs int64
			first := ""
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					break
				}
				status, d, err, ok := op(c, g, i)
				lat = append(lat, d)
				if !ok {
					errs++
					if first == "" {
						first = strconv.Itoa(status) + " " + string(c.resp.Body()) + " " + errString(err)
					}
				}
			}
			mu.Lock()
			run.lat = append(run.lat, lat...)
			run.errors += errs
			if run.firstErr == "" {
				run.firstErr = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	run.elapsed = time.Since(start)
	return run
}

// setup runs op untimed and fails the benchmark on any error.
func (cb *cartBench) setup(b *testing.B, what string, total int, op cartOp) {
	b.Helper()
	if r := cb.parallel(total, op); r.errors > 0 {
		b.Fatalf("setup %s: %d errors, first: %s", what, r.errors, r.firstErr)
	}
}

// measure runs the timed phase and reports its metrics.
func (cb *cartBench) measure(b *testing.B, op cartOp) {
	b.Helper()
	entries0, commands0 := cb.n.counter.entries.Load(), cb.n.counter.commands.Load()
	b.ResetTimer()
	r := cb.parallel(b.N, op)
	b.StopTimer()
	if r.firstErr != "" {
		b.Logf("first error: %s", r.firstErr)
	}
	slices.Sort(r.lat)
	pct := func(p float64) float64 {
		if len(r.lat) == 0 {
			return 0
		}
		return float64(r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/r.elapsed.Seconds(), "ops/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(0.999), "p999-ms")
	b.ReportMetric(pct(1), "max-ms")
	b.ReportMetric(float64(r.errors), "errors")
	if e := cb.n.counter.entries.Load() - entries0; e > 0 {
		b.ReportMetric(float64(cb.n.counter.commands.Load()-commands0)/float64(e), "cmds/entry")
	}
}

// cartIDOf extracts "id" from a JSON object answer without decoding it all:
// the first "id" key of a cart or checkout is its own.
func cartIDOf(body []byte) string {
	const k = `"id":"`
	i := cartIndex(body, k)
	if i < 0 {
		return ""
	}
	rest := body[i+len(k):]
	j := cartIndex(rest, `"`)
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

func cartIndex(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

// createCarts makes k carts and returns their ids.
func (cb *cartBench) createCarts(b *testing.B, k int, owner string) []string {
	ids := make([]string, k)
	cb.setup(b, "create carts", k, func(c *benchClient, _, i int) (int, time.Duration, error, bool) {
		st, d, err := c.do("POST", "/v1/carts", []byte(`{"owner":"`+owner+strconv.Itoa(i)+`"}`), nil)
		ids[i] = cartIDOf(c.resp.Body())
		return st, d, err, st == fasthttp.StatusCreated && ids[i] != ""
	})
	return ids
}

func BenchmarkCartAdd(b *testing.B) {
	cb := newCartBench(b)
	const cartsPerClient, identities = 16, 40
	carts := cb.createCarts(b, cb.s.clients*cartsPerClient, "user:add-")
	bodies := make([][]byte, identities)
	for k := range bodies {
		bodies[k] = []byte(`{"sku":"sku-` + strconv.Itoa(k) + `","variant":"v","seller":"s","qty":1,"price":{"amount_minor":1299,"currency":"EUR"}}`)
	}
	cb.measure(b, func(c *benchClient, g, i int) (int, time.Duration, error, bool) {
		// Client g owns carts [g*16, g*16+16): no two clients edit one cart.
		cart := carts[g*cartsPerClient+i%cartsPerClient]
		var key []byte
		if cb.s.idempotency {
			key = strconv.AppendInt([]byte("add-"), int64(i), 10)
		}
		st, d, err := c.do("POST", "/v1/carts/"+cart+"/lines", bodies[(i/cartsPerClient)%identities], key)
		return st, d, err, st == fasthttp.StatusOK
	})
}

func BenchmarkCartRead(b *testing.B) {
	cb := newCartBench(b)
	const numCarts, linesPerCart, numPools = 1000, 5, 100
	cb.setup(b, "pools", numPools, func(c *benchClient, _, i int) (int, time.Duration, error, bool) {
		st, d, err := c.do("PUT", "/v1/pools/"+poolName(i), []byte(`{"on_hand":1000000}`), nil)
		return st, d, err, st == fasthttp.StatusCreated
	})
	carts := cb.createCarts(b, numCarts, "user:read-")
	cb.setup(b, "lines", numCarts*linesPerCart, func(c *benchClient, _, i int) (int, time.Duration, error, bool) {
		// Line k of every cart is added in round k.
		cart, k := carts[i%numCarts], i/numCarts
		body := `{"sku":"sku-` + strconv.Itoa(k) + `","pool":"` + poolName((i*7+k)%numPools) + `","qty":1,"price":{"amount_minor":500,"currency":"EUR"}}`
		st, d, err := c.do("POST", "/v1/carts/"+cart+"/lines", []byte(body), nil)
		return st, d, err, st == fasthttp.StatusOK
	})
	paths := make([]string, numCarts)
	for i, id := range carts {
		paths[i] = "/v1/carts/" + id
	}
	cb.measure(b, func(c *benchClient, _, i int) (int, time.Duration, error, bool) {
		st, d, err := c.do("GET", paths[(i*7919)%numCarts], nil, nil)
		return st, d, err, st == fasthttp.StatusOK
	})
}

func BenchmarkCartMerge(b *testing.B) {
	cb := newCartBench(b)
	const sourceLines, identities = 3, 20
	targets := cb.createCarts(b, cb.s.clients, "user:merge-")
	sources := cb.createCarts(b, b.N, "anon:merge-")
	cb.setup(b, "source lines", b.N*sourceLines, func(c *benchClient, _, i int) (int, time.Duration, error, bool) {
		src, k := sources[i%b.N], i/b.N
		body := `{"sku":"sku-` + strconv.Itoa((i%b.N+k)%identities) + `","variant":"v","qty":1}`
		st, d, err := c.do("POST", "/v1/carts/"+src+"/lines", []byte(body), nil)
		return st, d, err, st == fasthttp.StatusOK
	})
	var merged atomic.Int64
	cb.measure(b, func(c *benchClient, g, i int) (int, time.Duration, error, bool) {
		body := []byte(`{"source":"` + sources[i] + `","policy":"sum"}`)
		st, d, err := c.do("POST", "/v1/carts/"+targets[g]+"/merge", body, nil)
		ok := st == fasthttp.StatusOK
		if ok {
			merged.Add(1)
		}
		return st, d, err, ok
	})
	// Every merged source is retired into a target.
	for _, src := range sources[:min(len(sources), 50)] {
		c, err := cb.n.machine.Cart(src)
		if err != nil || c.State.String() != "merged" {
			b.Fatalf("source %s after the run: %+v %v", src, c, err)
		}
	}
	if merged.Load() != int64(b.N) {
		b.Fatalf("%d of %d merges succeeded", merged.Load(), b.N)
	}
}
