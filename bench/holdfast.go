package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Holdfast is the target for a holdfast cluster, spoken to over its HTTP
// API (CONTRACT.md). It implements Target, HoldReader, PoolReader,
// CartTarget and MergeTarget.
//
// Requests the leader must answer (every POST and PUT, and the
// linearizable reads: pools, reservations, the pool listing) go through
// httpNodes.doLeader: with TargetOptions.LeaderAware straight to the
// leader once an answer has named it, else round-robin like everything
// else (a follower forwards them). Reads that allow staleness, a pool read
// with ?consistency=stale (InStock) and a cart read, are always spread
// over every node.
type Holdfast struct {
	url   string
	nodes *httpNodes

	mu         sync.Mutex
	discovered bool
	discovery  string // what discover found, for the notes
}

// OpenHoldfast opens "http://host:port[,host:port...]" (or https://):
// every node of the cluster, requests spread over them round-robin (see
// Holdfast for the leader-aware routing). opts.Token is sent as a bearer
// token; https uses opts.TLS.
func OpenHoldfast(rawURL string, opts TargetOptions) (Target, error) {
	scheme := "http"
	if strings.HasPrefix(rawURL, "https://") {
		scheme = "https"
	}
	addrs, err := parseNodes(rawURL, scheme)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("target %q: no nodes", rawURL)
	}
	nodes := newHTTPNodes(addrs, opts)
	if scheme == "https" {
		nodes.useTLS(opts.TLS)
	}
	if opts.Token != "" {
		nodes.authorization = "Bearer " + opts.Token
	}
	return &Holdfast{url: rawURL, nodes: nodes}, nil
}

// RouteStats reports how the requests the leader answers were routed so
// far (see httpNodes).
func (h *Holdfast) RouteStats() RouteStats { return h.nodes.routeStats() }

// DiscoveryNote says what the leader-aware client learned from the
// cluster at Setup ("" when not leader-aware).
func (h *Holdfast) DiscoveryNote() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.discovery
}

// discover asks every listed node once for GET /v1/cluster and maps node
// ids to the listed addresses: each node's own id (the "id" it answers
// with) to the address it was reached at, and members whose api_addr is a
// listed address to that address. The leader the nodes report becomes the
// known leader. A node that does not answer is asked again at the next
// Setup.
func (h *Holdfast) discover(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.discovered || !h.nodes.leaderAware {
		return
	}
	ids := map[string]int{}
	if m := h.nodes.ids.Load(); m != nil {
		for k, v := range *m {
			ids[k] = v
		}
	}
	index := map[string]int{}
	for i, a := range h.nodes.addrs {
		index[a] = i
	}
	var leader string
	answered := 0
	for i := range h.nodes.addrs {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, body, err := h.nodes.doAt(cctx, i, "GET", "/v1/cluster")
		cancel()
		if err != nil || st != 200 {
			continue
		}
		var c struct {
			ID      string `json:"id"`
			Leader  string `json:"leader"`
			Members []struct {
				ID      string `json:"id"`
				APIAddr string `json:"api_addr"`
			} `json:"members"`
		}
		if json.Unmarshal(body, &c) != nil || c.ID == "" {
			continue
		}
		answered++
		ids[c.ID] = i
		for _, m := range c.Members {
			if j, ok := index[m.APIAddr]; ok {
				if _, known := ids[m.ID]; !known {
					ids[m.ID] = j
				}
			}
		}
		if c.Leader != "" {
			leader = c.Leader
		}
	}
	h.nodes.setIDs(ids)
	if leader != "" {
		h.nodes.setLeader([]byte(leader))
	}
	h.discovered = answered == len(h.nodes.addrs)
	names := make([]string, 0, len(ids))
	for id, i := range ids {
		names = append(names, id+"="+h.nodes.addrs[i])
	}
	sort.Strings(names)
	h.discovery = fmt.Sprintf("GET /v1/cluster: %d of %d nodes answered; ids %s; leader %q", answered, len(h.nodes.addrs), strings.Join(names, " "), leader)
}

// Name implements Target.
func (h *Holdfast) Name() string { return "holdfast" }

// Close implements Target.
func (h *Holdfast) Close() error { h.nodes.close(); return nil }

// ---- wire types (only the fields the harness reads) ----

type hfError struct {
	Error struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Details json.RawMessage `json:"details"`
	} `json:"error"`
}

type hfLine struct {
	Pool  string `json:"pool"`
	Qty   int64  `json:"qty"`
	State string `json:"state"`
}

type hfReservation struct {
	ID        string   `json:"id"`
	Buyer     string   `json:"buyer"`
	State     string   `json:"state"`
	Lines     []hfLine `json:"lines"`
	ExpiresAt string   `json:"expires_at"`
	Position  *int64   `json:"position"`
}

type hfPool struct {
	ID     string `json:"id"`
	OnHand int64  `json:"on_hand"`
	Held   int64  `json:"held"`
	Sold   int64  `json:"sold"`
	Claim  string `json:"claim"`
}

type hfCartLine struct {
	ID        string `json:"id"`
	Pool      string `json:"pool"`
	Qty       int64  `json:"qty"`
	UpdatedAt string `json:"updated_at"`
	Claim     string `json:"claim"`
}

type hfCart struct {
	ID      string       `json:"id"`
	Version int64        `json:"version"`
	State   string       `json:"state"`
	Lines   []hfCartLine `json:"lines"`
}

type hfCheckout struct {
	ID            string   `json:"id"`
	State         string   `json:"state"`
	ExpiresAt     string   `json:"expires_at"`
	ReservationID string   `json:"reservation_id"`
	Lines         []hfLine `json:"lines"`
	Corrections   []hfLine `json:"corrections"`
}

// outcomeOfCode maps a contract error code to an Outcome.
func outcomeOfCode(code string) Outcome {
	switch code {
	case "sold_out":
		return SoldOut
	case "buyer_limit":
		return BuyerLimit
	case "not_open":
		return NotOpen
	case "expired":
		return Expired
	case "invalid_state":
		return InvalidState
	case "version_conflict", "idempotency_mismatch":
		return Conflict
	case "not_found":
		return NotFound
	}
	return Failed
}

// refusal decodes an error answer: its outcome, its details, and an error
// when the answer is a failure rather than a refusal.
func refusal(status int, body []byte, err error) (Outcome, json.RawMessage, error) {
	var e hfError
	if status != 0 {
		_ = json.Unmarshal(body, &e)
	}
	o := outcomeOfCode(e.Error.Code)
	if status == 409 || status == 404 {
		if o != Failed {
			return o, e.Error.Details, nil
		}
	}
	if err == nil {
		err = fmt.Errorf("HTTP %d %s: %s", status, e.Error.Code, e.Error.Message)
	} else if status != 0 {
		err = fmt.Errorf("HTTP %d: %w", status, err)
	}
	return Failed, e.Error.Details, err
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func holdState(s string) HoldState {
	switch s {
	case "waiting":
		return HoldWaiting
	case "active":
		return HoldActive
	case "confirmed":
		return HoldConfirmed
	case "released":
		return HoldReleased
	case "expired":
		return HoldExpired
	}
	return HoldUnknown
}

// ---- pools ----

func poolBody(p PoolSpec) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"on_hand":%d,"per_buyer_limit":%d`, p.OnHand, p.PerBuyerLimit)
	if p.HoldTTLMs > 0 {
		fmt.Fprintf(&b, `,"hold_ttl_ms":%d,"max_hold_ttl_ms":%d`, p.HoldTTLMs, max(p.HoldTTLMs, 900000))
	}
	if p.Draw != nil {
		fmt.Fprintf(&b, `,"mode":"draw","draw":{"opens_at":%q,"closes_at":%q,"seed":%q}`,
			formatTime(p.Draw.OpensAt), formatTime(p.Draw.ClosesAt), p.Draw.Seed)
	}
	if p.Waitlist || p.Draw != nil {
		offer := p.HoldTTLMs
		if offer <= 0 {
			offer = 120000
		}
		fmt.Fprintf(&b, `,"waitlist":{"enabled":true,"offer_ttl_ms":%d,"wait_ttl_ms":3600000}`, offer)
	}
	b.WriteByte('}')
	return []byte(b.String())
}

// Setup implements Target: PUT /v1/pools/{id} for every pool, 64 at a
// time. A leader-aware client first maps the cluster (discover). Then it
// waits until every node has applied the pools (waitApplied), so that the
// first stale reads, answered by followers, find them.
func (h *Holdfast) Setup(ctx context.Context, pools []PoolSpec) error {
	h.discover(ctx)
	err := parallel(ctx, len(pools), 64, func(i int) error {
		p := pools[i]
		st, body, err := h.nodes.doLeader(ctx, "PUT", "/v1/pools/"+url.PathEscape(p.ID), poolBody(p), "")
		if err != nil || (st != 200 && st != 201) {
			return fmt.Errorf("PUT pool %s: HTTP %d %s %v", p.ID, st, body, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	h.waitApplied(ctx, 5*time.Second)
	return nil
}

// clusterIndexes reads one node's commit and applied indexes.
func (h *Holdfast) clusterIndexes(ctx context.Context, i int) (commit, applied uint64, ok bool) {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, body, err := h.nodes.doAt(cctx, i, "GET", "/v1/cluster")
	if err != nil || st != 200 {
		return 0, 0, false
	}
	var c struct {
		CommitIndex  uint64 `json:"commit_index"`
		AppliedIndex uint64 `json:"applied_index"`
	}
	if json.Unmarshal(body, &c) != nil {
		return 0, 0, false
	}
	return c.CommitIndex, c.AppliedIndex, true
}

// waitApplied waits, at most limit, until every listed node has applied
// the highest commit index any of them reports (a node that does not
// answer is not waited for).
func (h *Holdfast) waitApplied(ctx context.Context, limit time.Duration) {
	var target uint64
	for i := range h.nodes.addrs {
		if c, _, ok := h.clusterIndexes(ctx, i); ok {
			target = max(target, c)
		}
	}
	deadline := time.Now().Add(limit)
	for i := range h.nodes.addrs {
		for ctx.Err() == nil && time.Now().Before(deadline) {
			if _, a, ok := h.clusterIndexes(ctx, i); !ok || a >= target {
				break
			}
			sleepUntil(ctx, time.Now().Add(5*time.Millisecond))
		}
	}
}

// ReadPool implements PoolReader (a linearizable read).
func (h *Holdfast) ReadPool(ctx context.Context, pool string) (PoolLedger, error) {
	st, body, err := h.nodes.doLeader(ctx, "GET", "/v1/pools/"+url.PathEscape(pool), nil, "")
	if err != nil || st != 200 {
		return PoolLedger{}, fmt.Errorf("GET pool %s: HTTP %d %s %v", pool, st, body, err)
	}
	var p hfPool
	if err := json.Unmarshal(body, &p); err != nil {
		return PoolLedger{}, err
	}
	return PoolLedger{OnHand: p.OnHand, Held: p.Held, Sold: p.Sold}, nil
}

// InStock implements Target: what a cart page shows, read from any node
// (?consistency=stale, as a cart read is): true when the claim is
// soft_claim.
func (h *Holdfast) InStock(ctx context.Context, pool string) (bool, error) {
	st, body, err := h.nodes.do(ctx, "GET", "/v1/pools/"+url.PathEscape(pool)+"?consistency=stale", nil, "")
	if err != nil || st != 200 {
		return false, fmt.Errorf("GET pool %s: HTTP %d %s %v", pool, st, body, err)
	}
	var p hfPool
	if err := json.Unmarshal(body, &p); err != nil {
		return false, err
	}
	return p.Claim == "soft_claim", nil
}

// ---- reservations ----

func (r *hfReservation) hold() Hold {
	h := Hold{ID: r.ID, ExpiresAt: parseTime(r.ExpiresAt)}
	switch r.State {
	case "active":
		h.Outcome = OK
	case "waiting":
		h.Outcome = Waiting
	case "expired":
		h.Outcome = Expired
	default:
		h.Outcome = InvalidState
	}
	return h
}

// Reserve implements Target: POST /v1/reservations.
func (h *Holdfast) Reserve(ctx context.Context, r ReserveRequest) (Hold, error) {
	b := make([]byte, 0, 160)
	b = append(b, `{"buyer":`...)
	b = strconv.AppendQuote(b, r.Buyer)
	b = append(b, `,"lines":[{"pool":`...)
	b = strconv.AppendQuote(b, r.Pool)
	b = append(b, `,"qty":`...)
	b = strconv.AppendInt(b, max(r.Qty, 1), 10)
	b = append(b, `}]`...)
	if r.TTLMs > 0 {
		b = append(b, `,"ttl_ms":`...)
		b = strconv.AppendInt(b, r.TTLMs, 10)
	}
	if r.Wait {
		b = append(b, `,"wait":true`...)
	}
	b = append(b, '}')
	st, body, err := h.nodes.doLeader(ctx, "POST", "/v1/reservations", b, r.IdemKey)
	if err == nil && st == 201 {
		var res hfReservation
		if err := json.Unmarshal(body, &res); err != nil {
			return Hold{Outcome: Failed}, err
		}
		return res.hold(), nil
	}
	o, _, err := refusal(st, body, err)
	return Hold{Outcome: o}, err
}

func (h *Holdfast) transition(ctx context.Context, id, verb string) (Outcome, error) {
	st, body, err := h.nodes.doLeader(ctx, "POST", "/v1/reservations/"+url.PathEscape(id)+"/"+verb, nil, verb+"-"+id)
	if err == nil && st == 200 {
		return OK, nil
	}
	o, _, err := refusal(st, body, err)
	return o, err
}

// Confirm implements Target.
func (h *Holdfast) Confirm(ctx context.Context, hd Hold) (Outcome, error) {
	return h.transition(ctx, hd.ID, "confirm")
}

// Release implements Target.
func (h *Holdfast) Release(ctx context.Context, hd Hold) (Outcome, error) {
	return h.transition(ctx, hd.ID, "release")
}

func (h *Holdfast) getReservation(ctx context.Context, id string) (*hfReservation, int, error) {
	st, body, err := h.nodes.doLeader(ctx, "GET", "/v1/reservations/"+url.PathEscape(id), nil, "")
	if err != nil || st != 200 {
		if st == 404 {
			return nil, st, nil
		}
		return nil, st, fmt.Errorf("GET reservation %s: HTTP %d %s %v", id, st, body, err)
	}
	var r hfReservation
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, st, err
	}
	return &r, st, nil
}

// ReadHold implements HoldReader.
func (h *Holdfast) ReadHold(ctx context.Context, id string) (HoldStatus, error) {
	r, st, err := h.getReservation(ctx, id)
	if err != nil {
		return HoldStatus{}, err
	}
	if st == 404 {
		return HoldStatus{}, fmt.Errorf("reservation %s not found", id)
	}
	s := HoldStatus{State: holdState(r.State), ExpiresAt: parseTime(r.ExpiresAt)}
	if r.Position != nil {
		s.Position = *r.Position
	}
	return s, nil
}

// Ledger implements Target: the pools (listed page by page when there are
// many, else read one by one) and every hold read back, 64 at a time.
func (h *Holdfast) Ledger(ctx context.Context, pools []string, holds []string) (Ledger, error) {
	l := Ledger{Pools: map[string]PoolLedger{}, BuyerUnits: map[BuyerPool]int64{}, Confirmed: map[string]bool{}}
	var mu sync.Mutex
	if len(pools) <= 64 {
		err := parallel(ctx, len(pools), 16, func(i int) error {
			p, err := h.ReadPool(ctx, pools[i])
			if err != nil {
				return err
			}
			mu.Lock()
			l.Pools[pools[i]] = p
			mu.Unlock()
			return nil
		})
		if err != nil {
			return l, err
		}
	} else if err := h.listPools(ctx, pools, l.Pools); err != nil {
		return l, err
	}
	err := parallel(ctx, len(holds), 64, func(i int) error {
		r, st, err := h.getReservation(ctx, holds[i])
		if err != nil || st == 404 {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if r.State == "confirmed" {
			l.Confirmed[r.ID] = true
		}
		if r.State == "active" || r.State == "waiting" || r.State == "confirmed" {
			for _, ln := range r.Lines {
				if ln.State == "held" || ln.State == "waiting" || ln.State == "sold" {
					l.BuyerUnits[BuyerPool{r.Buyer, ln.Pool}] += ln.Qty
				}
			}
		}
		return nil
	})
	return l, err
}

// listPools pages through GET /v1/pools from just before the smallest
// wanted id until past the largest, keeping the wanted ones.
func (h *Holdfast) listPools(ctx context.Context, pools []string, out map[string]PoolLedger) error {
	want := make(map[string]bool, len(pools))
	for _, p := range pools {
		want[p] = true
	}
	sorted := append([]string(nil), pools...)
	sort.Strings(sorted)
	after := ""
	if first := sorted[0]; len(first) > 1 {
		after = first[:len(first)-1] // sorts before first
	}
	last := sorted[len(sorted)-1]
	for page := 0; page <= len(pools); page++ { // each page moves past at least one pool
		path := "/v1/pools?limit=1000"
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		st, body, err := h.nodes.doLeader(ctx, "GET", path, nil, "")
		if err != nil || st != 200 {
			return fmt.Errorf("GET %s: HTTP %d %s %v", path, st, body, err)
		}
		var page struct {
			Pools     []hfPool `json:"pools"`
			HasMore   bool     `json:"has_more"`
			NextAfter *string  `json:"next_after"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return err
		}
		for _, p := range page.Pools {
			if want[p.ID] {
				out[p.ID] = PoolLedger{OnHand: p.OnHand, Held: p.Held, Sold: p.Sold}
			}
		}
		if !page.HasMore || page.NextAfter == nil || *page.NextAfter >= last {
			return nil
		}
		after = *page.NextAfter
	}
	return fmt.Errorf("GET /v1/pools: more pages than pools")
}

// ---- carts ----

func (c *hfCart) view() CartView {
	v := CartView{ID: c.ID, Version: c.Version, State: c.State, Lines: make([]CartLineView, len(c.Lines))}
	for i, l := range c.Lines {
		v.Lines[i] = CartLineView{ID: l.ID, Pool: l.Pool, Qty: l.Qty, InStock: l.Claim == "soft_claim", UpdatedAt: parseTime(l.UpdatedAt)}
	}
	return v
}

func (h *Holdfast) cartWrite(ctx context.Context, path string, body []byte, idemKey string, okStatus int) (CartView, Outcome, error) {
	st, resp, err := h.nodes.doLeader(ctx, "POST", path, body, idemKey)
	if err == nil && st == okStatus {
		var c hfCart
		if err := json.Unmarshal(resp, &c); err != nil {
			return CartView{}, Failed, err
		}
		return c.view(), OK, nil
	}
	o, _, err := refusal(st, resp, err)
	return CartView{}, o, err
}

// CreateCart implements CartTarget: POST /v1/carts.
func (h *Holdfast) CreateCart(ctx context.Context, owner, idemKey string) (CartView, Outcome, error) {
	return h.cartWrite(ctx, "/v1/carts", []byte(`{"owner":`+strconv.Quote(owner)+`}`), idemKey, 201)
}

// AddLine implements CartTarget: POST /v1/carts/{id}/lines. The line's
// identity is sku = the pool id, variant std, seller s1, fulfillment dc1,
// and it names its pool explicitly.
func (h *Holdfast) AddLine(ctx context.Context, cartID string, l CartLine, idemKey string) (CartView, Outcome, error) {
	body := `{"sku":` + strconv.Quote(l.Pool) + `,"variant":"std","seller":"s1","fulfillment":"dc1","pool":` +
		strconv.Quote(l.Pool) + `,"qty":` + strconv.FormatInt(max(l.Qty, 1), 10) +
		`,"price":{"amount_minor":1900,"currency":"EUR"}}`
	return h.cartWrite(ctx, "/v1/carts/"+url.PathEscape(cartID)+"/lines", []byte(body), idemKey, 200)
}

// ReadCart implements CartTarget: GET /v1/carts/{id} (answered by the
// receiving node from its replica).
func (h *Holdfast) ReadCart(ctx context.Context, cartID string) (CartView, error) {
	st, body, err := h.nodes.do(ctx, "GET", "/v1/carts/"+url.PathEscape(cartID), nil, "")
	if err != nil || st != 200 {
		return CartView{}, fmt.Errorf("GET cart %s: HTTP %d %s %v", cartID, st, body, err)
	}
	var c hfCart
	if err := json.Unmarshal(body, &c); err != nil {
		return CartView{}, err
	}
	return c.view(), nil
}

// Checkout implements CartTarget: POST /v1/carts/{id}/checkout,
// all_or_nothing.
func (h *Holdfast) Checkout(ctx context.Context, cartID string, expectedVersion, ttlMs int64, idemKey string) (CheckoutResult, error) {
	body := `{"expected_version":` + strconv.FormatInt(expectedVersion, 10)
	if ttlMs > 0 {
		body += `,"ttl_ms":` + strconv.FormatInt(ttlMs, 10)
	}
	body += "}"
	st, resp, err := h.nodes.doLeader(ctx, "POST", "/v1/carts/"+url.PathEscape(cartID)+"/checkout", []byte(body), idemKey)
	if err == nil && (st == 201 || st == 200) {
		var co hfCheckout
		if err := json.Unmarshal(resp, &co); err != nil {
			return CheckoutResult{Outcome: Failed}, err
		}
		r := CheckoutResult{ID: co.ID, Outcome: OK}
		if co.ReservationID != "" {
			r.Holds = []Hold{{ID: co.ReservationID, Outcome: OK, ExpiresAt: parseTime(co.ExpiresAt)}}
		}
		for _, c := range co.Corrections {
			r.Failed = append(r.Failed, c.Pool)
		}
		return r, nil
	}
	o, details, err := refusal(st, resp, err)
	r := CheckoutResult{Outcome: o}
	var d struct {
		Corrections []hfLine `json:"corrections"`
	}
	if len(details) > 0 && json.Unmarshal(details, &d) == nil {
		for _, c := range d.Corrections {
			if c.State == "sold_out" || c.State == "buyer_limit" {
				r.Failed = append(r.Failed, c.Pool)
			}
		}
	}
	return r, err
}

// ConfirmCheckout implements CartTarget: POST /v1/checkouts/{id}/confirm.
func (h *Holdfast) ConfirmCheckout(ctx context.Context, checkoutID, idemKey string) (Outcome, error) {
	st, body, err := h.nodes.doLeader(ctx, "POST", "/v1/checkouts/"+url.PathEscape(checkoutID)+"/confirm", nil, idemKey)
	if err == nil && st == 200 {
		return OK, nil
	}
	o, _, err := refusal(st, body, err)
	return o, err
}

// MergeCarts implements MergeTarget: POST /v1/carts/{target}/merge.
func (h *Holdfast) MergeCarts(ctx context.Context, target, source, policy, idemKey string) (MergeResult, error) {
	body := `{"source":` + strconv.Quote(source) + `,"policy":` + strconv.Quote(policy) + `}`
	st, resp, err := h.nodes.doLeader(ctx, "POST", "/v1/carts/"+url.PathEscape(target)+"/merge", []byte(body), idemKey)
	if err == nil && st == 200 {
		var m struct {
			Cart   hfCart `json:"cart"`
			Report []struct {
				Line      hfCartLine `json:"line"`
				Outcome   string     `json:"outcome"`
				TargetQty int64      `json:"target_qty"`
				SourceQty int64      `json:"source_qty"`
			} `json:"report"`
		}
		if err := json.Unmarshal(resp, &m); err != nil {
			return MergeResult{Outcome: Failed}, err
		}
		r := MergeResult{Outcome: OK, Cart: m.Cart.view()}
		for _, o := range m.Report {
			r.Report = append(r.Report, MergeLine{Pool: o.Line.Pool, Outcome: o.Outcome, Qty: o.Line.Qty, TargetQty: o.TargetQty, SourceQty: o.SourceQty})
		}
		return r, nil
	}
	o, _, err := refusal(st, resp, err)
	return MergeResult{Outcome: o}, err
}

// ReviewCart implements MergeTarget: POST /v1/carts/{id}/review.
func (h *Holdfast) ReviewCart(ctx context.Context, cartID, idemKey string) (CartView, Outcome, error) {
	return h.cartWrite(ctx, "/v1/carts/"+url.PathEscape(cartID)+"/review", nil, idemKey, 200)
}

// parallel runs f(0..n-1) on up to width goroutines and returns the first
// error (the others still finish).
func parallel(ctx context.Context, n, width int, f func(i int) error) error {
	if n == 0 {
		return nil
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for range min(width, n) {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
