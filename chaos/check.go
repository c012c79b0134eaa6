package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Check is one named check and its outcome.
type Check struct {
	Name   string
	Passed bool
	Detail string
}

// Checks collects check outcomes.
type Checks struct {
	mu   sync.Mutex
	List []Check
}

// Add records a check.
func (c *Checks) Add(name string, passed bool, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.List = append(c.List, Check{Name: name, Passed: passed, Detail: fmt.Sprintf(format, args...)})
}

// Failed lists the failed checks.
func (c *Checks) Failed() []Check {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Check
	for _, ch := range c.List {
		if !ch.Passed {
			out = append(out, ch)
		}
	}
	return out
}

// StateHashes compares the replicas' state hashes: nodes at the same
// applied index must agree. Entries keep applying (idle ticks), so it
// retries until every running node answers at one index, or the timeout.
func (c *Cluster) StateHashes(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		// Ask every node at once: each hashes the state at the index it
		// has when the request arrives (applies pause meanwhile), and
		// entries keep coming (ticks), so only simultaneous asks meet at
		// one index once hashing takes longer than the gap between entries.
		var running []int
		for i := range c.Nodes {
			if c.Running(i) {
				running = append(running, i)
			}
		}
		answers := make([]*Status, len(running))
		errs := make([]error, len(running))
		var wg sync.WaitGroup
		for k, i := range running {
			wg.Go(func() { answers[k], errs[k] = c.Status(i, true) })
		}
		wg.Wait()
		var sts []*Status
		for k, i := range running {
			if errs[k] != nil || answers[k].StateHash == nil {
				last = fmt.Sprintf("%s: no state hash (%v)", c.Nodes[i].ID, errs[k])
				sts = nil
				break
			}
			sts = append(sts, answers[k])
		}
		if len(sts) > 0 {
			same := true
			for _, st := range sts[1:] {
				same = same && st.StateHash.AppliedIndex == sts[0].StateHash.AppliedIndex
			}
			if same {
				var parts []string
				agree := true
				for _, st := range sts {
					parts = append(parts, fmt.Sprintf("%s=%s@%d", st.ID, st.StateHash.SHA256[:12], st.StateHash.AppliedIndex))
					agree = agree && st.StateHash.SHA256 == sts[0].StateHash.SHA256
				}
				last = strings.Join(parts, " ")
				if agree {
					return last, nil
				}
				// A hash taken an instant after an apply whose index was
				// not yet published: retry; a real divergence persists.
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last, fmt.Errorf("replica state hashes never agreed at one applied index within %s: %s", timeout, last)
}

// finalRes is a reservation as one node's final state has it.
type finalRes struct {
	resJSON
	status int
}

// fetchAll reads every reservation r_1..r_max (and on past max until 64
// in a row are missing) from node i's own state (?consistency=stale,
// answered locally), and every workload pool.
func (c *Cluster) fetchAll(i int, maxID uint64, pools []string) (map[uint64]finalRes, map[string]poolJSON, error) {
	base := "http://" + c.Nodes[i].HTTPAddr
	get := func(path string, into any) (int, error) {
		var lastErr error
		for range 5 {
			resp, err := obsClient.Get(base + path)
			if err != nil {
				lastErr = err
				time.Sleep(100 * time.Millisecond)
				continue
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				lastErr = err
				continue
			}
			if resp.StatusCode == 200 {
				return 200, json.Unmarshal(b, into)
			}
			return resp.StatusCode, nil
		}
		return 0, lastErr
	}
	res := map[uint64]finalRes{}
	var mu sync.Mutex
	var firstErr error
	next := uint64(1)
	misses := 0 // consecutive 404s past maxID
	const workers = 8
	for next <= maxID || misses < 64 {
		// A window of ids, fetched in parallel.
		lo := next
		hi := lo + 256
		var wg sync.WaitGroup
		ids := make(chan uint64)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for id := range ids {
					var r resJSON
					st, err := get(fmt.Sprintf("/v1/reservations/r_%x?consistency=stale", id), &r)
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = fmt.Errorf("%s: r_%x: %w", c.Nodes[i].ID, id, err)
					}
					res[id] = finalRes{resJSON: r, status: st}
					mu.Unlock()
				}
			}()
		}
		for id := lo; id < hi; id++ {
			ids <- id
		}
		close(ids)
		wg.Wait()
		if firstErr != nil {
			return nil, nil, firstErr
		}
		for id := lo; id < hi; id++ {
			if id <= maxID {
				continue
			}
			if res[id].status == 404 {
				misses++
				delete(res, id)
			} else {
				misses = 0
			}
		}
		next = hi
		if next > maxID+1<<20 {
			return nil, nil, fmt.Errorf("%s: reservations never end", c.Nodes[i].ID)
		}
	}
	pls := map[string]poolJSON{}
	for _, id := range pools {
		var p poolJSON
		st, err := get("/v1/pools/"+id+"?consistency=stale", &p)
		if err != nil || st != 200 {
			return nil, nil, fmt.Errorf("%s: pool %s: %d %v", c.Nodes[i].ID, id, st, err)
		}
		pls[id] = p
	}
	return res, pls, nil
}

// CheckFinalState checks every running node's final state against the
// invariants and against what the workload saw acknowledged.
func (w *Workload) CheckFinalState(checks *Checks) {
	w.Acked.mu.Lock()
	maxID := w.Acked.MaxID
	w.Acked.mu.Unlock()
	var poolIDs []string
	for _, p := range w.pools {
		poolIDs = append(poolIDs, p.ID)
	}
	var first map[uint64]finalRes
	for i := range w.c.Nodes {
		if !w.c.Running(i) {
			continue
		}
		id := w.c.Nodes[i].ID
		res, pools, err := w.c.fetchAll(i, maxID, poolIDs)
		if err != nil {
			checks.Add("final state readable", false, "%v", err)
			continue
		}
		w.checkNode(checks, id, res, pools)
		if first == nil {
			first = res
			continue
		}
		// Every node holds the same reservations in the same states.
		diff := 0
		var example string
		for rid, a := range first {
			b, ok := res[rid]
			if !ok || a.status != b.status || a.State != b.State {
				diff++
				if example == "" {
					example = fmt.Sprintf("r_%x: %d %s vs %d %s", rid, a.status, a.State, b.status, b.State)
				}
			}
		}
		checks.Add("replicas agree on every reservation ("+id+")", diff == 0 && len(res) == len(first), "%d differ, %d vs %d reservations; %s", diff, len(first), len(res), example)
	}
}

func (w *Workload) checkNode(checks *Checks, node string, res map[uint64]finalRes, pools map[string]poolJSON) {
	type tally struct{ held, sold int64 }
	byPool := map[string]*tally{}
	usage := map[string]int64{} // pool|buyer -> held+sold units
	count := map[string]int{}   // pool|buyer -> reservations
	ids := make([]uint64, 0, len(res))
	for id := range res {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	for _, id := range ids {
		r := res[id]
		if r.status != 200 {
			continue
		}
		for _, l := range r.Lines {
			if w.byID[l.Pool] == nil {
				continue // a probe pool, not the workload's
			}
			t := byPool[l.Pool]
			if t == nil {
				t = &tally{}
				byPool[l.Pool] = t
			}
			k := l.Pool + "|" + r.Buyer
			count[k]++
			switch l.State {
			case "held":
				t.held += l.Qty
				usage[k] += l.Qty
			case "sold":
				t.sold += l.Qty
				usage[k] += l.Qty
			}
		}
	}
	// Pool counts: held+sold+available == on_hand, nothing oversold, and
	// the pool's counts are the sum of its reservations'.
	bad := []string{}
	for _, p := range w.pools {
		pj, t := pools[p.ID], byPool[p.ID]
		if t == nil {
			t = &tally{}
		}
		if pj.Held+pj.Sold+pj.Available != pj.OnHand || pj.Available < 0 || pj.Held < 0 || pj.Sold < 0 || pj.Held+pj.Sold > pj.OnHand {
			bad = append(bad, fmt.Sprintf("%s: on_hand=%d held=%d sold=%d available=%d", p.ID, pj.OnHand, pj.Held, pj.Sold, pj.Available))
		}
		if pj.Held != t.held || pj.Sold != t.sold {
			bad = append(bad, fmt.Sprintf("%s: pool says held=%d sold=%d, its reservations %d/%d", p.ID, pj.Held, pj.Sold, t.held, t.sold))
		}
	}
	checks.Add("held+sold+available==on_hand, oversell 0, counts match reservations ("+node+")", len(bad) == 0, "%d pools; %s", len(w.pools), strings.Join(first3(bad), "; "))

	over := []string{}
	for k, u := range usage {
		pool := k[:strings.Index(k, "|")]
		if p := w.byID[pool]; p != nil && u > p.Limit {
			over = append(over, fmt.Sprintf("%s: %d units > limit %d", k, u, p.Limit))
		}
	}
	sort.Strings(over)
	checks.Add("no buyer over its limit ("+node+")", len(over) == 0, "%d buyers; %s", len(usage), strings.Join(first3(over), "; "))

	w.Acked.mu.Lock()
	defer w.Acked.mu.Unlock()
	var vanished, lostConfirm, lostRelease, wrong []string
	for rid, h := range w.Acked.Reservations {
		r, ok := res[parseResID(rid)]
		if !ok || r.status != 200 {
			vanished = append(vanished, rid)
			continue
		}
		if r.Buyer != h.buyer || len(r.Lines) != 1 || r.Lines[0].Pool != h.pool || r.Lines[0].Qty != h.qty {
			wrong = append(wrong, rid)
			continue
		}
		switch {
		case w.Acked.Confirmed[rid]:
			if r.State != "confirmed" {
				lostConfirm = append(lostConfirm, rid+" is "+r.State)
			}
		case w.Acked.Released[rid]:
			if r.State != "released" {
				lostRelease = append(lostRelease, rid+" is "+r.State)
			}
		case w.Acked.Unknown[rid]:
			if r.State != "active" && r.State != "confirmed" && r.State != "released" && r.State != "expired" {
				wrong = append(wrong, rid+" is "+r.State)
			}
		default:
			// Neither confirmed nor released: still held (TTLs outlast
			// the run) or expired if the run outlasted them.
			if r.State != "active" && r.State != "expired" {
				wrong = append(wrong, rid+" is "+r.State+" (never confirmed or released by its client)")
			}
		}
	}
	sort.Strings(vanished)
	checks.Add("every acknowledged reservation present ("+node+")", len(vanished) == 0, "%d acknowledged; vanished: %s", len(w.Acked.Reservations), strings.Join(first3(vanished), ", "))
	checks.Add("every acknowledged confirm present ("+node+")", len(lostConfirm) == 0, "%d confirms; lost: %s", len(w.Acked.Confirmed), strings.Join(first3(lostConfirm), ", "))
	checks.Add("every acknowledged release present ("+node+")", len(lostRelease) == 0, "%d releases; lost: %s", len(w.Acked.Released), strings.Join(first3(lostRelease), ", "))
	checks.Add("reservations in the state their client left them ("+node+")", len(wrong) == 0, "%s", strings.Join(first3(wrong), ", "))

	// Idempotency: each acknowledged reserve used its own key and its
	// retries reused it, so a buyer has exactly as many reservations as
	// it had acknowledged reserves (plus at most its unknown ones).
	dup := []string{}
	unknown := w.unknownReserves()
	for k, n := range count {
		if acked := w.Acked.ReservesByBuyer[k]; n > acked+unknown[k] {
			dup = append(dup, fmt.Sprintf("%s: %d reservations for %d acknowledged reserves", k, n, acked))
		}
	}
	sort.Strings(dup)
	checks.Add("a retried request never reserves twice ("+node+")", len(dup) == 0, "%s", strings.Join(first3(dup), "; "))
}

// unknownReserves counts, per pool|buyer, the reserve operations whose
// outcome stayed unknown.
func (w *Workload) unknownReserves() map[string]int {
	n := map[string]int{}
	w.histMu.Lock()
	defer w.histMu.Unlock()
	for _, op := range w.history {
		in, out := op.Input.(opInput), op.Output.(opOutput)
		if in.Kind == opReserve && out.Unknown {
			n[in.Pool+"|"+in.Buyer]++
		}
	}
	return n
}

func first3(s []string) []string {
	if len(s) > 3 {
		return append(s[:3:3], fmt.Sprintf("... (%d in all)", len(s)))
	}
	return s
}

// httpGetJSON is a small helper: GET url into v, returning the status.
func httpGetJSON(url string, v any) (int, error) {
	resp, err := obsClient.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode == http.StatusOK && v != nil {
		return resp.StatusCode, json.Unmarshal(b, v)
	}
	return resp.StatusCode, nil
}
