package api_test

// HTTP benchmarks of the target: one node with fsync on, 64
// concurrent clients reserving from 1,000 pools over loopback HTTP. Goal on
// the 2-core reference machine: 30,000 reservations/s with p99 under 10 ms.
//
//	go test ./api -run '^$' -bench BenchmarkHTTPReserve -benchtime 20000x
//
// b.N is the number of reservations (BenchmarkHTTPReserveConfirm: reserve +
// confirm pairs), spread over the clients; every request carries a distinct
// buyer and Idempotency-Key. Each run starts a fresh node (Pebble log with
// fsync, Raft over loopback TCP, the API on a real socket) and checks
// afterwards that the pools account for exactly the acknowledged
// reservations: nothing oversold, nothing lost.
//
// Reported per run:
//
//	reservations/s, requests/s  successful reservations (201) and HTTP requests per second
//	p50-ms p99-ms p999-ms max-ms client-observed latency of every request
//	errors                      answers other than 201 (reserve) or 200 (confirm), and transport errors
//	cmds/entry                  mean state machine commands per Raft log entry
//	cpu-us/op                   process CPU (client and server together) per reservation
//	other-cores                 cores other processes kept busy meanwhile: well above 0
//	                            means a shared machine and figures not worth comparing
//	retained-B/op               live heap left per reservation (reservations and
//	                            idempotency records the allocator keeps for 24 h)
//	GCs                         garbage collections during the run
//
// and logged: the distribution of commands per log entry and per FSM apply
// batch (holdfast_raft_apply_batch_commands), and the server-side latency
// from holdfast_raft_apply_seconds and holdfast_http_request_seconds.
//
// Knobs for tuning experiments (environment variables; the default in
// parentheses):
//
//	HOLDFAST_BENCH_CLIENTS         concurrent clients (64)
//	HOLDFAST_BENCH_POOLS           pools (1000)
//	HOLDFAST_BENCH_IDEMPOTENCY     send an Idempotency-Key per POST: 1 or 0 (1)
//	HOLDFAST_BENCH_MAX_BATCH_CMDS  raftstore.Config.MaxBatchCmds (raftstore's default)
//	HOLDFAST_BENCH_PIPELINES       raftstore.Config.Pipelines (raftstore's default)
//	HOLDFAST_BENCH_VERBOSE         1: log the distributions for runs under 1,000 ops too (0)

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

func BenchmarkHTTPReserve(b *testing.B) { benchHTTP(b, false) }

func BenchmarkHTTPReserveConfirm(b *testing.B) { benchHTTP(b, true) }

type benchSettings struct {
	clients, pools int
	idempotency    bool
	maxBatchCmds   int // 0: raftstore default
	pipelines      int // 0: raftstore default
	verbose        bool
	disableFast    bool // api.Config.DisableFastRefusals
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		b.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

func benchSettingsFromEnv(b *testing.B) benchSettings {
	s := benchSettings{
		clients:      envInt(b, "HOLDFAST_BENCH_CLIENTS", 64),
		pools:        envInt(b, "HOLDFAST_BENCH_POOLS", 1000),
		idempotency:  envInt(b, "HOLDFAST_BENCH_IDEMPOTENCY", 1) != 0,
		maxBatchCmds: envInt(b, "HOLDFAST_BENCH_MAX_BATCH_CMDS", 0),
		pipelines:    envInt(b, "HOLDFAST_BENCH_PIPELINES", 0),
		verbose:      envInt(b, "HOLDFAST_BENCH_VERBOSE", 0) != 0,
	}
	if s.clients < 1 || s.pools < 1 {
		b.Fatal("HOLDFAST_BENCH_CLIENTS and HOLDFAST_BENCH_POOLS must be at least 1")
	}
	return s
}

// entryCounter wraps the engine to record how many commands each log entry
// carries: raftstore calls StateMachine.Apply once per entry.
type entryCounter struct {
	*engine.Machine
	// buckets[k] counts entries of 2^(k-1) < cmds <= 2^k (k=0: one command).
	buckets  [16]atomic.Int64
	entries  atomic.Int64
	commands atomic.Int64
}

func (c *entryCounter) Apply(nowMs int64, cmds [][]byte) []any {
	if n := len(cmds); n > 0 { // empty entries are ticks
		k := 0
		for 1<<k < n && k < len(c.buckets)-1 {
			k++
		}
		c.buckets[k].Add(1)
		c.entries.Add(1)
		c.commands.Add(int64(n))
	}
	return c.Machine.Apply(nowMs, cmds)
}

// benchNode is a node started like testNode.start (harness_test.go) but
// with the raftstore.Config knobs exposed and the engine wrapped in an
// entryCounter. raftstore and the API share testNode.reg, from which the
// batch and latency histograms are read back.
type benchNode struct {
	*testNode
	counter *entryCounter
}

// bigRunStopped is when the node of the last big run was stopped. fasthttp
// keeps a shut-down server reachable, and through its handler the whole
// node (allocator state included), until its worker pool's cleaner next
// wakes up: up to 10 s (fasthttp's MaxIdleWorkerDuration) after Shutdown.
var bigRunStopped time.Time

// settle waits until the previous big run's node can be collected, so a
// run neither spends its GC cycles marking the last run's heap nor sees it
// freed midway (which would skew retained-B/op).
func settle(b *testing.B) {
	if bigRunStopped.IsZero() {
		return
	}
	if d := 11*time.Second - time.Since(bigRunStopped); d > 0 {
		b.Logf("waiting %v for the previous run's node to be released", d.Round(time.Millisecond))
		time.Sleep(d)
	}
}

func startBenchNode(b *testing.B, s benchSettings) *benchNode {
	b.Helper()
	settle(b)
	n := &benchNode{
		testNode: &testNode{id: "n1", dir: b.TempDir(), raftAddr: freeAddr(b), httpAddr: freeAddr(b), reg: prometheus.NewRegistry()},
	}
	n.machine = engine.New(engine.Config{})
	n.counter = &entryCounter{Machine: n.machine}
	var err error
	n.node, err = raftstore.Open(raftstore.Config{
		ID: n.id, DataDir: n.dir, RaftAddr: n.raftAddr, APIAddr: n.httpAddr,
		Peers:            []raftstore.Peer{{ID: n.id, Addr: n.raftAddr}},
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, Logger: quietLogger(), RaftLog: io.Discard,
		MaxBatchCmds: s.maxBatchCmds, Pipelines: s.pipelines, Registerer: n.reg,
	}, n.counter)
	if err != nil {
		b.Fatalf("open: %v", err)
	}
	ln, err := net.Listen("tcp", n.httpAddr)
	if err != nil {
		n.node.Close()
		b.Fatalf("listen: %v", err)
	}
	n.srv = api.New(api.Config{Node: n.node, Alloc: n.machine.Alloc, Carts: n.machine, Registry: n.reg, Logger: quietLogger(),
		RequestTimeout: 5 * time.Second, DisableFastRefusals: s.disableFast})
	go n.srv.Serve(ln)
	b.Cleanup(func() {
		n.stop(b)
		if b.N >= 1000 {
			bigRunStopped = time.Now()
		}
		// testing keeps this closure reachable after it ran (B.cleanups is
		// truncated, not cleared), and with -count the first B lives on:
		// drop the node so it can be collected.
		*n.testNode = testNode{}
		*n = benchNode{}
	})
	waitLeader(b, []*testNode{n.testNode}, 10*time.Second)
	return n
}

// histograms gathers the registry's histograms, keyed by name plus, for a
// labelled series, "/" and its label values.
func (n *benchNode) histograms(b *testing.B) map[string]*dto.Histogram {
	mfs, err := n.reg.Gather()
	if err != nil {
		b.Fatalf("gather: %v", err)
	}
	out := make(map[string]*dto.Histogram)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h == nil {
				continue
			}
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "/" + l.GetValue()
			}
			out[key] = h
		}
	}
	return out
}

// histDelta is what a histogram recorded between two gathers.
type histDelta struct {
	count   uint64
	sum     float64
	bounds  []float64 // bucket upper bounds
	buckets []uint64  // cumulative counts
}

func deltaOf(before, after map[string]*dto.Histogram, key string) histDelta {
	a := after[key]
	if a == nil {
		return histDelta{}
	}
	d := histDelta{count: a.GetSampleCount(), sum: a.GetSampleSum()}
	for _, bk := range a.GetBucket() {
		d.bounds = append(d.bounds, bk.GetUpperBound())
		d.buckets = append(d.buckets, bk.GetCumulativeCount())
	}
	if p := before[key]; p != nil {
		d.count -= p.GetSampleCount()
		d.sum -= p.GetSampleSum()
		for i, bk := range p.GetBucket() {
			d.buckets[i] -= bk.GetCumulativeCount()
		}
	}
	return d
}

func (d histDelta) mean() float64 { return d.sum / float64(max(d.count, 1)) }

// quantile returns the upper bound of the bucket holding quantile q.
func (d histDelta) quantile(q float64) float64 {
	for i, c := range d.buckets {
		if float64(c) >= q*float64(d.count) {
			return d.bounds[i]
		}
	}
	return d.sum // past the last bucket: no bound known
}

// distribution renders the share of observations per bucket.
func (d histDelta) distribution() string {
	var out bytes.Buffer
	prev := uint64(0)
	for i, c := range d.buckets {
		if c > prev {
			out.WriteString(" <=" + strconv.FormatFloat(d.bounds[i], 'f', -1, 64) + ":" + strconv.FormatFloat(100*float64(c-prev)/float64(d.count), 'f', 1, 64) + "%")
		}
		prev = c
	}
	if d.count > prev {
		out.WriteString(" more:" + strconv.FormatFloat(100*float64(d.count-prev)/float64(d.count), 'f', 1, 64) + "%")
	}
	return out.String()
}

// benchClient is one client goroutine's reusable request state.
type benchClient struct {
	hc   *fasthttp.HostClient
	base string
	req  *fasthttp.Request
	resp *fasthttp.Response
}

func newBenchClient(hc *fasthttp.HostClient, base string) *benchClient {
	return &benchClient{hc: hc, base: base, req: fasthttp.AcquireRequest(), resp: fasthttp.AcquireResponse()}
}

func (c *benchClient) release() {
	fasthttp.ReleaseRequest(c.req)
	fasthttp.ReleaseResponse(c.resp)
}

// do sends one request; idemKey may be empty. It returns the status (0 on a
// transport error) and the time taken; the body stays in c.resp.
func (c *benchClient) do(method, path string, body []byte, idemKey []byte) (int, time.Duration, error) {
	c.req.Reset()
	c.resp.Reset()
	c.req.Header.SetMethod(method)
	c.req.SetRequestURI(c.base + path)
	c.req.Header.SetContentType("application/json")
	if len(idemKey) > 0 {
		c.req.Header.SetBytesV("Idempotency-Key", idemKey)
	}
	c.req.SetBodyRaw(body)
	start := time.Now()
	err := c.hc.Do(c.req, c.resp)
	d := time.Since(start)
	if err != nil {
		return 0, d, err
	}
	return c.resp.StatusCode(), d, nil
}

func poolName(i int) string { return "bench-pool-" + strconv.Itoa(i) }

func benchHTTP(b *testing.B, confirm bool) {
	b.ReportAllocs() // process-wide: client, server and raft together
	s := benchSettingsFromEnv(b)
	n := startBenchNode(b, s)
	hc := &fasthttp.HostClient{
		Addr:                      n.httpAddr,
		MaxConns:                  max(2*s.clients, 64),
		ReadTimeout:               10 * time.Second,
		WriteTimeout:              10 * time.Second,
		MaxIdemponentCallAttempts: 1,
	}
	defer hc.CloseIdleConnections()
	base := "http://" + n.httpAddr

	// Pools with deep stock and no buyer limit, created concurrently.
	pools := make([]string, s.pools)
	for i := range pools {
		pools[i] = poolName(i)
	}
	var wg sync.WaitGroup
	var setupErr atomic.Value
	var nextPool atomic.Int64
	for range min(s.clients, s.pools) {
		wg.Go(func() {
			c := newBenchClient(hc, base)
			defer c.release()
			for {
				i := int(nextPool.Add(1)) - 1
				if i >= len(pools) {
					return
				}
				st, _, err := c.do("PUT", "/v1/pools/"+pools[i], []byte(`{"on_hand":1000000000}`), nil)
				if st != fasthttp.StatusCreated {
					setupErr.Store("PUT " + pools[i] + ": " + strconv.Itoa(st) + " " + string(c.resp.Body()) + " " + errString(err))
					return
				}
			}
		})
	}
	wg.Wait()
	if e := setupErr.Load(); e != nil {
		b.Fatal(e)
	}
	entries0, commands0 := n.counter.entries.Load(), n.counter.commands.Load()
	var buckets0 [16]int64
	for k := range buckets0 {
		buckets0[k] = n.counter.buckets[k].Load()
	}
	hist0 := n.histograms(b)

	type clientStats struct {
		lat                 []time.Duration
		reserved, confirmed int64
		errors              int64
		firstErr            string
	}
	stats := make([]clientStats, s.clients)
	perReq := 1
	if confirm {
		perReq = 2
	}
	for i := range stats {
		stats[i].lat = make([]time.Duration, 0, perReq*(b.N/s.clients+1))
	}
	var next atomic.Int64
	var mem0 runtime.MemStats
	runtime.GC()
	runtime.GC() // twice: the first only moves sync.Pool contents to the victim cache
	runtime.ReadMemStats(&mem0)
	cpu0, host0 := processCPU(), hostBusy()
	b.ResetTimer()
	start := time.Now()
	for g := range s.clients {
		wg.Go(func() {
			st := &stats[g]
			c := newBenchClient(hc, base)
			defer c.release()
			rng := rand.New(rand.NewPCG(uint64(g), 0x5eed))
			var body, key []byte
			fail := func(what string, status int, err error) {
				st.errors++
				if st.firstErr == "" {
					st.firstErr = what + ": " + strconv.Itoa(status) + " " + string(c.resp.Body()) + " " + errString(err)
				}
			}
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				body = append(body[:0], `{"buyer":"buyer-`...)
				body = strconv.AppendInt(body, i, 10)
				body = append(body, `","lines":[{"pool":"`...)
				body = append(body, pools[rng.IntN(len(pools))]...)
				body = append(body, `","qty":1}]}`...)
				key = key[:0]
				if s.idempotency {
					key = strconv.AppendInt(append(key, "res-"...), i, 10)
				}
				status, d, err := c.do("POST", "/v1/reservations", body, key)
				st.lat = append(st.lat, d)
				if status != fasthttp.StatusCreated {
					fail("reserve", status, err)
					continue
				}
				st.reserved++
				if !confirm {
					continue
				}
				id := reservationID(c.resp.Body())
				if id == "" {
					fail("reserve answer without id", status, nil)
					continue
				}
				if s.idempotency {
					key = strconv.AppendInt(append(key[:0], "conf-"...), i, 10)
				}
				status, d, err = c.do("POST", "/v1/reservations/"+id+"/confirm", nil, key)
				st.lat = append(st.lat, d)
				if status != fasthttp.StatusOK {
					fail("confirm "+id, status, err)
					continue
				}
				st.confirmed++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	cpu, host := processCPU()-cpu0, hostBusy()-host0
	var mem1 runtime.MemStats
	runtime.ReadMemStats(&mem1)
	gcs := mem1.NumGC - mem0.NumGC
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&mem1)
	retained := int64(mem1.HeapAlloc) - int64(mem0.HeapAlloc)

	var lat []time.Duration
	var reserved, confirmed, errs int64
	for i := range stats {
		st := &stats[i]
		lat = append(lat, st.lat...)
		reserved += st.reserved
		confirmed += st.confirmed
		errs += st.errors
		if st.firstErr != "" && errs <= 3 {
			b.Logf("client %d: first error: %s", i, st.firstErr)
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		i := min(len(lat)-1, int(p*float64(len(lat))))
		return float64(lat[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(reserved)/elapsed.Seconds(), "reservations/s")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "requests/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(0.999), "p999-ms")
	b.ReportMetric(pct(1), "max-ms")
	b.ReportMetric(float64(errs), "errors")
	if cpu0 >= 0 && cpu >= 0 {
		// Client and server share the process: this is the CPU both spend
		// per reservation (per reserve+confirm pair in ReserveConfirm).
		b.ReportMetric(float64(cpu.Microseconds())/float64(max(reserved, 1)), "cpu-us/op")
		if host0 >= 0 && host >= 0 {
			// Cores kept busy by other processes during the run: figures
			// taken while this is well above 0 measure a shared machine.
			b.ReportMetric(max(0, (host-cpu).Seconds()/elapsed.Seconds()), "other-cores")
		}
	}

	// Heap still live after the run per reservation (reservations and
	// idempotency records the allocator keeps for 24 h, plus noise such as
	// the Raft log cache and pooled buffers), and GC cycles during the run.
	b.ReportMetric(float64(retained)/float64(max(reserved, 1)), "retained-B/op")
	b.ReportMetric(float64(gcs), "GCs")
	b.Logf("live heap %.1f MB before the run, %.1f MB after", float64(mem0.HeapAlloc)/(1<<20), float64(mem1.HeapAlloc)/(1<<20))

	// Commands per log entry during the measured phase.
	entries := n.counter.entries.Load() - entries0
	commands := n.counter.commands.Load() - commands0
	if entries > 0 {
		b.ReportMetric(float64(commands)/float64(entries), "cmds/entry")
	}
	if s.verbose || b.N >= 1000 {
		n.logBatches(b, buckets0, entries, commands, elapsed, hist0, confirm)
	}

	// The pools must account for exactly what was acknowledged.
	views, more := n.machine.Alloc.Pools("", len(pools)+1)
	if more || len(views) != len(pools) {
		b.Fatalf("%d pools listed (more=%v), want %d", len(views), more, len(pools))
	}
	var held, sold int64
	for _, v := range views {
		held += v.Held
		sold += v.Sold
		if v.Held < 0 || v.Sold < 0 || v.Available != v.Config.OnHand-v.Held-v.Sold || v.Available < 0 {
			b.Fatalf("pool %s inconsistent: %+v", v.ID, v)
		}
	}
	if held+sold != reserved || sold != confirmed {
		b.Fatalf("pools hold %d and sold %d; clients got %d reservations (201) and %d confirms (200)", held, sold, reserved, confirmed)
	}
}

// logBatches logs how many commands the log entries of the measured phase
// carried, from the engine wrapper (per entry) and from raftstore's
// Prometheus histograms (per FSM apply batch, i.e. per group of entries
// raft hands the FSM at once, roughly one per fsync on a single node), and
// the server-side view of latency: time in the API handler and time from
// raft.Apply to the applied result.
func (n *benchNode) logBatches(b *testing.B, buckets0 [16]int64, entries, commands int64, elapsed time.Duration, hist0 map[string]*dto.Histogram, confirm bool) {
	var out bytes.Buffer
	for k := range buckets0 {
		c := n.counter.buckets[k].Load() - buckets0[k]
		if c == 0 {
			continue
		}
		lo, hi := 1, 1<<k
		if k > 0 {
			lo = 1<<(k-1) + 1
		}
		out.WriteString(" [" + strconv.Itoa(lo) + "-" + strconv.Itoa(hi) + "]:" + strconv.FormatFloat(100*float64(c)/float64(entries), 'f', 1, 64) + "%")
	}
	b.Logf("commands per log entry:%s; %d entries (%.0f/s), %d commands, mean %.1f",
		out.String(), entries, float64(entries)/elapsed.Seconds(), commands, float64(commands)/float64(max(entries, 1)))

	hist1 := n.histograms(b)
	cmds := deltaOf(hist0, hist1, "holdfast_raft_apply_batch_commands")
	ents := deltaOf(hist0, hist1, "holdfast_raft_apply_batch_entries")
	if ents.count > 0 {
		b.Logf("holdfast_raft_apply_batch_*: %d FSM apply batches (%.0f/s), mean %.2f entries and %.1f commands per batch; commands per batch:%s",
			ents.count, float64(ents.count)/elapsed.Seconds(), ents.mean(), cmds.sum/float64(ents.count), cmds.distribution())
	}
	ms := func(d histDelta, q float64) float64 { return 1000 * d.quantile(q) }
	apply := deltaOf(hist0, hist1, "holdfast_raft_apply_seconds")
	b.Logf("raft.Apply to result, per entry (holdfast_raft_apply_seconds): mean %.2f ms, p50 <= %.2f ms, p99 <= %.2f ms",
		1000*apply.mean(), ms(apply, 0.5), ms(apply, 0.99))
	routes := []string{"reserve"}
	if confirm {
		routes = append(routes, "confirm")
	}
	for _, r := range routes {
		h := deltaOf(hist0, hist1, "holdfast_http_request_seconds/"+r)
		b.Logf("server handler %s (holdfast_http_request_seconds): mean %.2f ms, p50 <= %.2f ms, p99 <= %.2f ms",
			r, 1000*h.mean(), ms(h, 0.5), ms(h, 0.99))
	}
}

// processCPU returns the user+system CPU time of this process (client and
// server together) from /proc/self/stat, or -1 where that is unavailable.
func processCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return -1
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line, in clock ticks (USER_HZ, 100 on
	// Linux).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return -1
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(utime+stime) * (time.Second / 100)
}

// hostBusy returns the non-idle CPU time of the whole machine, all cores
// together, from /proc/stat, or -1 where that is unavailable.
func hostBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 8 || string(f[0]) != "cpu" {
		return -1
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return -1
		}
		busy += n
	}
	return time.Duration(busy) * (time.Second / 100)
}

// reservationID extracts "id" from a reservation answer without a full
// JSON decode (the answer starts {"id":"r_...").
func reservationID(body []byte) string {
	const field = `"id":"`
	i := bytes.Index(body, []byte(field))
	if i < 0 {
		return ""
	}
	rest := body[i+len(field):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
