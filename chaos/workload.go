package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
)

// WorkloadConfig shapes the checkout-like load run during faults.
type WorkloadConfig struct {
	Seed      uint64
	Workers   int // concurrent clients
	HotPools  int // few pools most requests go to, with little stock
	ColdPools int // many pools with plenty of stock
	// HotOnHand and ColdOnHand are the pools' initial stock.
	HotOnHand, ColdOnHand int64
	// HoldTTLMs is every hold's TTL: longer than the run, so that expiry
	// never decides an outcome the model has to guess (see model.go).
	HoldTTLMs int64
	// ThinkTime is each worker's pause between operations (bounds CPU).
	ThinkTime time.Duration
	// OpTimeout is how long a write is retried (same Idempotency-Key)
	// before its outcome is recorded as unknown.
	OpTimeout time.Duration
}

func (w *WorkloadConfig) defaults() {
	if w.Workers <= 0 {
		w.Workers = 12
	}
	if w.HotPools <= 0 {
		w.HotPools = 3
	}
	if w.ColdPools <= 0 {
		w.ColdPools = 40
	}
	if w.HotOnHand <= 0 {
		w.HotOnHand = 40
	}
	if w.ColdOnHand <= 0 {
		w.ColdOnHand = 1000
	}
	if w.HoldTTLMs <= 0 {
		w.HoldTTLMs = 3_600_000
	}
	if w.ThinkTime <= 0 {
		w.ThinkTime = 10 * time.Millisecond
	}
	if w.OpTimeout <= 0 {
		w.OpTimeout = 90 * time.Second
	}
}

// buyersPerPool is how many buyers each worker uses at a time on each
// pool (a generation of buyers; see worker).
const buyersPerPool = 3

// Per-buyer limits: small, so buyer_limit refusals happen often.
const (
	hotLimit  = 2
	coldLimit = 4
	maxExt    = 2
)

// poolInfo is a pool of the workload.
type poolInfo struct {
	ID     string
	Hot    bool
	OnHand int64
	Limit  int64
}

// heldRes is a reservation a worker holds and may confirm, release or
// extend.
type heldRes struct {
	id, pool, buyer string
	qty             int64
	ext             int
}

// Acked is what the workload saw acknowledged, for the final checks.
type Acked struct {
	mu sync.Mutex
	// Reservations maps an acknowledged reservation id to its pool,
	// buyer, qty.
	Reservations map[string]heldRes
	Confirmed    map[string]bool // acknowledged confirms
	Released     map[string]bool // acknowledged releases
	Unknown      map[string]bool // confirm/release whose outcome is unknown
	// ReservesByBuyer counts acknowledged reserve operations per
	// pool/buyer ("pool|buyer"), each with its own Idempotency-Key.
	ReservesByBuyer map[string]int
	MaxID           uint64
}

// Counters are what the workload did.
type Counters struct {
	Ops, Attempts, Retries, Unknown, Reads      atomic.Int64
	Reserved, SoldOut, BuyerLimit               atomic.Int64
	Confirmed, Released, Extended, ExtendDenied atomic.Int64
	Adjusted                                    atomic.Int64
	Unexpected                                  atomic.Int64
}

// Workload runs clients against a Cluster and records their history.
type Workload struct {
	cfg   WorkloadConfig
	c     *Cluster
	pools []*poolInfo
	byID  map[string]*poolInfo
	start time.Time
	http  *http.Client

	// avoid lists nodes the clients do not reach (a client partitioned
	// from them); they still may talk to every other node.
	avoidMu sync.RWMutex
	avoid   map[int]bool

	histMu  sync.Mutex
	history []porcupine.Operation

	Acked    Acked
	Counters Counters

	unexpectedMu sync.Mutex
	unexpected   []string

	lastWriteNs atomic.Int64 // when the latest write was acknowledged (since start)
}

// NewWorkload creates the pools (through the API) and returns the
// workload, ready to Run.
func NewWorkload(ctx context.Context, c *Cluster, cfg WorkloadConfig) (*Workload, error) {
	cfg.defaults()
	w := &Workload{
		cfg:   cfg,
		c:     c,
		byID:  map[string]*poolInfo{},
		avoid: map[int]bool{},
		http: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		}},
	}
	w.Acked.Reservations = map[string]heldRes{}
	w.Acked.Confirmed = map[string]bool{}
	w.Acked.Released = map[string]bool{}
	w.Acked.Unknown = map[string]bool{}
	w.Acked.ReservesByBuyer = map[string]int{}
	add := func(id string, hot bool, onHand, limit int64) {
		p := &poolInfo{ID: id, Hot: hot, OnHand: onHand, Limit: limit}
		w.pools = append(w.pools, p)
		w.byID[id] = p
	}
	for i := range cfg.HotPools {
		add(fmt.Sprintf("hot-%d", i), true, cfg.HotOnHand, hotLimit)
	}
	for i := range cfg.ColdPools {
		add(fmt.Sprintf("cold-%02d", i), false, cfg.ColdOnHand, coldLimit)
	}
	w.start = time.Now()
	for _, p := range w.pools {
		body := fmt.Sprintf(`{"on_hand":%d,"per_buyer_limit":%d,"hold_ttl_ms":%d,"max_hold_ttl_ms":%d,"max_extensions":%d}`,
			p.OnHand, p.Limit, cfg.HoldTTLMs, 2*cfg.HoldTTLMs, maxExt)
		st, _, err := w.write(ctx, "PUT", "/v1/pools/"+p.ID, body, "setup-"+p.ID, nil)
		if err != nil {
			return nil, fmt.Errorf("create pool %s: %w", p.ID, err)
		}
		if st != 201 && st != 200 {
			return nil, fmt.Errorf("create pool %s: status %d", p.ID, st)
		}
	}
	return w, nil
}

func buyerID(worker int, pool string, gen, b int) string {
	return fmt.Sprintf("w%d.%s.g%d.b%d", worker, pool, gen, b)
}

// buyers is what a worker knows of its buyers' units (held + sold) on
// each pool, from its own acknowledged operations: a buyer is used by one
// worker, one request at a time, so the worker can tell whether a reserve
// must be refused with buyer_limit.
type buyers struct {
	gen       map[string]int // pool -> current generation of buyers
	units     map[string]int64
	uncertain map[string]bool // an operation of the buyer's had an unknown outcome
}

// Avoid makes clients stop (or resume) talking to node i directly.
func (w *Workload) Avoid(i int, avoid bool) {
	w.avoidMu.Lock()
	defer w.avoidMu.Unlock()
	if avoid {
		w.avoid[i] = true
	} else {
		delete(w.avoid, i)
	}
}

func (w *Workload) pickNode(rng *rand.Rand) int {
	w.avoidMu.RLock()
	defer w.avoidMu.RUnlock()
	n := len(w.c.Nodes)
	for range 8 {
		i := rng.IntN(n)
		if !w.avoid[i] {
			return i
		}
	}
	for i := range n {
		if !w.avoid[i] {
			return i
		}
	}
	return rng.IntN(n)
}

func (w *Workload) now() int64 { return int64(time.Since(w.start)) }

// LastWrite is when the latest write was acknowledged.
func (w *Workload) LastWrite() time.Time {
	return w.start.Add(time.Duration(w.lastWriteNs.Load()))
}

func (w *Workload) unexpectedf(format string, args ...any) {
	w.Counters.Unexpected.Add(1)
	w.unexpectedMu.Lock()
	defer w.unexpectedMu.Unlock()
	if len(w.unexpected) < 50 {
		w.unexpected = append(w.unexpected, fmt.Sprintf(format, args...))
	}
}

// Unexpected lists answers the contract does not allow for the workload's
// requests (at most 50).
func (w *Workload) Unexpected() []string {
	w.unexpectedMu.Lock()
	defer w.unexpectedMu.Unlock()
	return append([]string(nil), w.unexpected...)
}

// errUnknown: the write's outcome stayed unknown until its deadline.
var errUnknown = errors.New("outcome unknown")

// attempt sends one request to node i through its client proxy.
func (w *Workload) attempt(ctx context.Context, i int, method, path, body, key string) (int, []byte, error) {
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, method, "http://"+w.c.ClientAddr(i)+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := w.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// write sends a write with an Idempotency-Key and retries it, as a
// checkout service would, on 503 and on network errors or timeouts, on
// any node, until it gets a definite answer or OpTimeout passes.
func (w *Workload) write(ctx context.Context, method, path, body, key string, rng *rand.Rand) (int, []byte, error) {
	if rng == nil {
		rng = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	}
	deadline := time.Now().Add(w.cfg.OpTimeout)
	backoff := 20 * time.Millisecond
	for tries := 0; ; tries++ {
		w.Counters.Attempts.Add(1)
		if tries > 0 {
			w.Counters.Retries.Add(1)
		}
		st, b, err := w.attempt(ctx, w.pickNode(rng), method, path, body, key)
		if err == nil && st != 503 {
			return st, b, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, nil, errUnknown
		}
		time.Sleep(backoff/2 + time.Duration(rng.Int64N(int64(backoff))))
		backoff = min(backoff*2, 400*time.Millisecond)
	}
}

// ---- history ----

func (w *Workload) record(client int, in opInput, out opOutput, call, ret int64) {
	w.histMu.Lock()
	defer w.histMu.Unlock()
	w.history = append(w.history, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
}

// History returns the recorded operations.
func (w *Workload) History() []porcupine.Operation {
	w.histMu.Lock()
	defer w.histMu.Unlock()
	return append([]porcupine.Operation(nil), w.history...)
}

// ---- the clients ----

type resJSON struct {
	ID    string `json:"id"`
	Buyer string `json:"buyer"`
	State string `json:"state"`
	Lines []struct {
		Pool  string `json:"pool"`
		Qty   int64  `json:"qty"`
		State string `json:"state"`
	} `json:"lines"`
	Extensions int64 `json:"extensions"`
}

type errJSON struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type poolJSON struct {
	ID        string `json:"id"`
	OnHand    int64  `json:"on_hand"`
	Held      int64  `json:"held"`
	Sold      int64  `json:"sold"`
	Available int64  `json:"available"`
}

func errCode(b []byte) string {
	var e errJSON
	_ = json.Unmarshal(b, &e)
	return e.Error.Code
}

// Run runs the workers until stop is closed; each finishes (resolves)
// the operation it has in flight, then returns.
func (w *Workload) Run(ctx context.Context, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for wk := range w.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.worker(ctx, wk, stop)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.restocker(ctx, stop)
	}()
	wg.Wait()
}

func (w *Workload) worker(ctx context.Context, wk int, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(w.cfg.Seed, uint64(wk)+1))
	var held []heldRes
	bs := &buyers{gen: map[string]int{}, units: map[string]int64{}, uncertain: map[string]bool{}}
	seq := 0
	hot, cold := w.pools[:w.cfg.HotPools], w.pools[w.cfg.HotPools:]
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-time.After(w.cfg.ThinkTime/2 + time.Duration(rng.Int64N(int64(w.cfg.ThinkTime)))):
		}
		seq++
		key := fmt.Sprintf("s%d-w%d-%d", w.cfg.Seed, wk, seq)
		r := rng.Float64()
		switch {
		case r < 0.08:
			var p *poolInfo
			if rng.Float64() < 0.7 {
				p = hot[rng.IntN(len(hot))]
			} else {
				p = cold[rng.IntN(len(cold))]
			}
			w.read(ctx, wk, p, rng)
		case len(held) > 0 && r < 0.3+0.1*float64(len(held)):
			// The more holds a client has open, the likelier it finishes
			// one (checkout completes or is abandoned).
			k := rng.IntN(len(held))
			h := held[k]
			x := rng.Float64()
			switch {
			case x < 0.45:
				if w.finish(ctx, wk, h, "confirm", key, rng, bs) {
					held = append(held[:k], held[k+1:]...)
				}
			case x < 0.75:
				if w.finish(ctx, wk, h, "release", key, rng, bs) {
					held = append(held[:k], held[k+1:]...)
				}
			default:
				if h.ext < 0 {
					break // an extension's outcome is unknown: its count is
				}
				switch w.extend(ctx, h, key, rng) {
				case extended:
					held[k].ext++
				case extendUnknown:
					held[k].ext = -1
				}
			}
		default:
			var p *poolInfo
			if rng.Float64() < 0.7 {
				p = hot[rng.IntN(len(hot))]
			} else {
				p = cold[rng.IntN(len(cold))]
			}
			qty := int64(1 + rng.IntN(2))
			buyer := buyerID(wk, p.ID, bs.gen[p.ID], rng.IntN(buyersPerPool))
			if bs.units[buyer]+qty > p.Limit && rng.Float64() < 0.75 {
				// Most of the time a buyer at its limit is followed by a
				// new one (shoppers come and go); otherwise the request
				// goes out and must be refused with buyer_limit.
				bs.gen[p.ID]++
				buyer = buyerID(wk, p.ID, bs.gen[p.ID], rng.IntN(buyersPerPool))
			}
			if h, ok := w.reserve(ctx, wk, p, buyer, qty, key, rng, bs); ok {
				held = append(held, h)
			}
		}
	}
}

func (w *Workload) reserve(ctx context.Context, wk int, p *poolInfo, buyer string, qty int64, key string, rng *rand.Rand, bs *buyers) (heldRes, bool) {
	w.Counters.Ops.Add(1)
	body := fmt.Sprintf(`{"buyer":%q,"lines":[{"pool":%q,"qty":%d}]}`, buyer, p.ID, qty)
	in := opInput{Kind: opReserve, Pool: p.ID, Buyer: buyer, Qty: qty}
	overLimit := bs.units[buyer]+qty > p.Limit
	call := w.now()
	st, b, err := w.write(ctx, "POST", "/v1/reservations", body, key, rng)
	ret := w.now()
	if err != nil {
		w.Counters.Unknown.Add(1)
		bs.uncertain[buyer] = true
		w.record(wk, in, opOutput{Unknown: true}, call, ret)
		return heldRes{}, false
	}
	if !bs.uncertain[buyer] {
		switch refusedForLimit := st == 409 && errCode(b) == "buyer_limit"; {
		case overLimit && !refusedForLimit:
			w.unexpectedf("reserve %s: buyer %s has %d units, limit %d, asked %d: want buyer_limit, got %d %.120s", key, buyer, bs.units[buyer], p.Limit, qty, st, b)
		case !overLimit && refusedForLimit:
			w.unexpectedf("reserve %s: buyer %s has %d units, limit %d, asked %d: refused with buyer_limit", key, buyer, bs.units[buyer], p.Limit, qty)
		}
	}
	switch st {
	case 201:
		var r resJSON
		if err := json.Unmarshal(b, &r); err != nil || r.State != "active" || len(r.Lines) != 1 || r.Lines[0].State != "held" || r.Lines[0].Qty != qty || r.Buyer != buyer {
			w.unexpectedf("reserve %s: 201 %s", key, b)
			return heldRes{}, false
		}
		w.Counters.Reserved.Add(1)
		w.lastWriteNs.Store(ret)
		bs.units[buyer] += qty
		h := heldRes{id: r.ID, pool: p.ID, buyer: buyer, qty: qty}
		w.Acked.mu.Lock()
		if _, dup := w.Acked.Reservations[r.ID]; dup {
			w.unexpectedf("reserve %s: reservation %s acknowledged to two different requests", key, r.ID)
		}
		w.Acked.Reservations[r.ID] = h
		w.Acked.ReservesByBuyer[p.ID+"|"+buyer]++
		if n := parseResID(r.ID); n > w.Acked.MaxID {
			w.Acked.MaxID = n
		}
		w.Acked.mu.Unlock()
		w.record(wk, in, opOutput{OK: true, ResID: r.ID}, call, ret)
		return h, true
	case 409:
		code := errCode(b)
		switch code {
		case "sold_out":
			w.Counters.SoldOut.Add(1)
		case "buyer_limit":
			w.Counters.BuyerLimit.Add(1)
		default:
			w.unexpectedf("reserve %s: 409 %s", key, b)
			return heldRes{}, false
		}
		w.record(wk, in, opOutput{Code: code}, call, ret)
	default:
		w.unexpectedf("reserve %s: %d %s", key, st, b)
	}
	return heldRes{}, false
}

// finish confirms or releases h; it reports whether the worker is done
// with h (any definite or unknown outcome).
func (w *Workload) finish(ctx context.Context, wk int, h heldRes, verb, key string, rng *rand.Rand, bs *buyers) bool {
	w.Counters.Ops.Add(1)
	kind := opConfirm
	if verb == "release" {
		kind = opRelease
	}
	in := opInput{Kind: kind, Pool: h.pool, Buyer: h.buyer, Qty: h.qty, ResID: h.id}
	call := w.now()
	st, b, err := w.write(ctx, "POST", "/v1/reservations/"+h.id+"/"+verb, "", key, rng)
	ret := w.now()
	if err != nil {
		w.Counters.Unknown.Add(1)
		bs.uncertain[h.buyer] = true
		w.Acked.mu.Lock()
		w.Acked.Unknown[h.id] = true
		w.Acked.mu.Unlock()
		w.record(wk, in, opOutput{Unknown: true}, call, ret)
		return true
	}
	want := map[string]string{"confirm": "confirmed", "release": "released"}[verb]
	var r resJSON
	if st != 200 || json.Unmarshal(b, &r) != nil || r.State != want {
		// The worker only confirms or releases an active hold it owns,
		// with a TTL longer than the run: anything but success is wrong.
		w.unexpectedf("%s %s (%s): %d %s", verb, h.id, key, st, b)
		w.Acked.mu.Lock()
		w.Acked.Unknown[h.id] = true
		w.Acked.mu.Unlock()
		w.record(wk, in, opOutput{Code: errCode(b)}, call, ret)
		return true
	}
	w.lastWriteNs.Store(ret)
	w.Acked.mu.Lock()
	if verb == "confirm" {
		w.Counters.Confirmed.Add(1)
		w.Acked.Confirmed[h.id] = true
	} else {
		w.Counters.Released.Add(1)
		w.Acked.Released[h.id] = true
		bs.units[h.buyer] -= h.qty
	}
	w.Acked.mu.Unlock()
	w.record(wk, in, opOutput{OK: true}, call, ret)
	return true
}

// extend extends h by a short ttl_ms: expires_at never moves earlier, so
// it stays past the run. Extensions are checked per reservation (they do
// not change the pool's counts).
func (w *Workload) extend(ctx context.Context, h heldRes, key string, rng *rand.Rand) extendOutcome {
	w.Counters.Ops.Add(1)
	st, b, err := w.write(ctx, "POST", "/v1/reservations/"+h.id+"/extend", `{"ttl_ms":1000}`, key, rng)
	if err != nil {
		w.Counters.Unknown.Add(1)
		return extendUnknown
	}
	switch {
	case st == 200 && h.ext < maxExt:
		var r resJSON
		if json.Unmarshal(b, &r) != nil || r.State != "active" || r.Extensions != int64(h.ext+1) {
			w.unexpectedf("extend %s (%s) after %d extensions: %s", h.id, key, h.ext, b)
		}
		w.Counters.Extended.Add(1)
		w.lastWriteNs.Store(w.now())
		return extended
	case st == 409 && h.ext >= maxExt && errCode(b) == "invalid_state":
		w.Counters.ExtendDenied.Add(1)
	default:
		w.unexpectedf("extend %s (%s) after %d extensions: %d %s", h.id, key, h.ext, st, b)
	}
	return notExtended
}

type extendOutcome int

const (
	notExtended extendOutcome = iota
	extended
	extendUnknown
)

// read is a linearizable GET of a pool; it is recorded only when it got an
// answer (a read without one changes nothing).
func (w *Workload) read(ctx context.Context, wk int, p *poolInfo, rng *rand.Rand) {
	w.Counters.Ops.Add(1)
	call := w.now()
	for range 4 {
		st, b, err := w.attempt(ctx, w.pickNode(rng), "GET", "/v1/pools/"+p.ID, "", "")
		if err != nil || st == 503 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		ret := w.now()
		var pj poolJSON
		if st != 200 || json.Unmarshal(b, &pj) != nil {
			w.unexpectedf("read %s: %d %s", p.ID, st, b)
			return
		}
		w.Counters.Reads.Add(1)
		w.record(wk, opInput{Kind: opRead, Pool: p.ID}, opOutput{OK: true, OnHand: pj.OnHand, Held: pj.Held, Sold: pj.Sold}, call, ret)
		return
	}
}

// restocker adds stock to the hot pools now and then, as a merchant
// would, so they keep selling out and coming back.
func (w *Workload) restocker(ctx context.Context, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(w.cfg.Seed, 1<<32))
	client := w.cfg.Workers // its own porcupine client id
	seq := 0
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-time.After(1500 * time.Millisecond):
		}
		for _, p := range w.pools[:w.cfg.HotPools] {
			seq++
			key := fmt.Sprintf("s%d-restock-%d", w.cfg.Seed, seq)
			delta := int64(5 + rng.IntN(10))
			in := opInput{Kind: opAdjust, Pool: p.ID, Qty: delta}
			call := w.now()
			st, b, err := w.write(ctx, "POST", "/v1/pools/"+p.ID+"/adjust", fmt.Sprintf(`{"delta":%d}`, delta), key, rng)
			ret := w.now()
			if err != nil {
				w.Counters.Unknown.Add(1)
				w.record(client, in, opOutput{Unknown: true}, call, ret)
				continue
			}
			if st != 200 {
				w.unexpectedf("adjust %s: %d %s", p.ID, st, b)
				continue
			}
			w.Counters.Adjusted.Add(1)
			w.lastWriteNs.Store(ret)
			w.record(client, in, opOutput{OK: true}, call, ret)
		}
	}
}

func parseResID(id string) uint64 {
	var n uint64
	if _, err := fmt.Sscanf(strings.TrimPrefix(id, "r_"), "%x", &n); err != nil {
		return 0
	}
	return n
}

// PoolIDs lists the workload's pools, sorted.
func (w *Workload) PoolIDs() []string {
	ids := make([]string, 0, len(w.pools))
	for _, p := range w.pools {
		ids = append(ids, p.ID)
	}
	sort.Strings(ids)
	return ids
}

// jsonBody is a helper for tests building request bodies.
func jsonBody(v any) string {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(v)
	return strings.TrimSpace(buf.String())
}
