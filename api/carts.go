package api

import (
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/cart"
)

// Carts reads the cart layer's committed state on this replica;
// *engine.Machine implements it.
type Carts interface {
	Cart(id string) (*cart.Cart, *allocator.Error)
	Checkout(id string) (*cart.Checkout, *allocator.Error)
	// Restoring reports a snapshot install in progress: local reads wait.
	Restoring() bool
}

// ---- requests ----

type priceJSON struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
	OfferID     string `json:"offer_id,omitempty"`
}

type createCartReq struct {
	Owner string `json:"owner"`
}

type addLineReq struct {
	SKU         string            `json:"sku"`
	Variant     string            `json:"variant"`
	Seller      string            `json:"seller"`
	Fulfillment string            `json:"fulfillment"`
	Attrs       map[string]string `json:"attrs"`
	Pool        string            `json:"pool"`
	Qty         int64             `json:"qty"`
	Price       *priceJSON        `json:"price"`
}

type setQtyReq struct {
	Qty         *int64 `json:"qty"`
	LineVersion *int64 `json:"line_version"`
}

type mergeReq struct {
	Source string  `json:"source"`
	Policy *string `json:"policy"`
}

type checkoutReq struct {
	ExpectedVersion *int64  `json:"expected_version"`
	TTLMs           *int64  `json:"ttl_ms"`
	Mode            *string `json:"mode"`
}

// ---- responses ----

type cartLineJSON struct {
	ID          string            `json:"id"`
	SKU         string            `json:"sku"`
	Variant     string            `json:"variant"`
	Seller      string            `json:"seller"`
	Fulfillment string            `json:"fulfillment"`
	Attrs       map[string]string `json:"attrs"`
	Pool        string            `json:"pool"`
	Qty         int64             `json:"qty"`
	Price       *priceJSON        `json:"price"`
	LineVersion int64             `json:"line_version"`
	UpdatedAt   string            `json:"updated_at"`
	// Decoration from this replica's allocator (cart reads only).
	Claim     string `json:"claim,omitempty"`
	Available *int64 `json:"available,omitempty"`
	AsOf      string `json:"as_of,omitempty"`
}

type cartJSON struct {
	ID           string         `json:"id"`
	Owner        string         `json:"owner"`
	Version      int64          `json:"version"`
	State        string         `json:"state"`
	ReviewReason string         `json:"review_reason,omitempty"`
	CheckoutID   string         `json:"checkout_id,omitempty"`
	MergedInto   string         `json:"merged_into,omitempty"`
	Lines        []cartLineJSON `json:"lines"`
	CreatedAt    string         `json:"created_at"`
	UpdatedAt    string         `json:"updated_at"`
}

func priceOut(p cart.Price) *priceJSON {
	if p.Currency == "" && p.AmountMinor == 0 && p.OfferID == "" {
		return nil
	}
	return &priceJSON{AmountMinor: p.AmountMinor, Currency: p.Currency, OfferID: p.OfferID}
}

func lineOut(l *cart.Line) cartLineJSON {
	attrs := make(map[string]string, len(l.Attrs))
	for _, a := range l.Attrs {
		attrs[a.Key] = a.Value
	}
	return cartLineJSON{
		ID: l.ID, SKU: l.SKU, Variant: l.Variant, Seller: l.Seller, Fulfillment: l.Fulfillment,
		Attrs: attrs, Pool: l.Pool, Qty: l.Qty, Price: priceOut(l.Price), LineVersion: l.LineVersion,
		UpdatedAt: formatTime(l.UpdatedAtMs),
	}
}

func cartOut(c *cart.Cart) *cartJSON {
	out := &cartJSON{
		ID: c.ID, Owner: c.Owner, Version: c.Version, State: c.State.String(), ReviewReason: c.ReviewReason,
		CheckoutID: c.CheckoutID, MergedInto: c.MergedInto, Lines: make([]cartLineJSON, len(c.Lines)),
		CreatedAt: formatTime(c.CreatedAtMs), UpdatedAt: formatTime(c.UpdatedAtMs),
	}
	for i := range c.Lines {
		out.Lines[i] = lineOut(&c.Lines[i])
	}
	return out
}

// decorate adds each line's claim from this replica's allocator: the
// assembly of durable contents and volatile availability, each with its age.
func (s *Server) decorate(c *cartJSON) {
	asOf := formatTime(s.alloc.ClockMs())
	for i := range c.Lines {
		l := &c.Lines[i]
		l.AsOf = asOf
		p, err := s.alloc.Pool(l.Pool)
		if err != nil {
			l.Claim = "visible_interest" // no pool: intent only
			continue
		}
		l.Claim = p.Claim.String()
		if p.Claim == allocator.ClaimSoft {
			avail := p.Available
			l.Available = &avail
		}
	}
}

type checkoutLineJSON struct {
	LineID string     `json:"line_id"`
	Pool   string     `json:"pool"`
	Qty    int64      `json:"qty"`
	Price  *priceJSON `json:"price"`
	State  string     `json:"state"`
}

type correctionJSON struct {
	LineID  string `json:"line_id"`
	Pool    string `json:"pool"`
	Qty     int64  `json:"qty"`
	State   string `json:"state"`
	Message string `json:"message"`
}

type checkoutJSON struct {
	ID            string             `json:"id"`
	CartID        string             `json:"cart_id"`
	CartVersion   int64              `json:"cart_version"`
	State         string             `json:"state"`
	ValidatedAt   string             `json:"validated_at"`
	ExpiresAt     string             `json:"expires_at"`
	ConfirmedAt   *string            `json:"confirmed_at"`
	ReservationID string             `json:"reservation_id"`
	Lines         []checkoutLineJSON `json:"lines"`
	Corrections   []correctionJSON   `json:"corrections"`
}

func correctionsOut(cs []cart.Correction) []correctionJSON {
	out := make([]correctionJSON, len(cs))
	for i, c := range cs {
		out[i] = correctionJSON{LineID: c.LineID, Pool: c.Pool, Qty: c.Qty, State: c.State.String(), Message: c.Message}
	}
	return out
}

func checkoutOut(co *cart.Checkout) *checkoutJSON {
	out := &checkoutJSON{
		ID: co.ID, CartID: co.CartID, CartVersion: co.CartVersion, State: co.State.String(),
		ValidatedAt: formatTime(co.ValidatedAtMs), ExpiresAt: formatTime(co.ExpiresAtMs),
		ReservationID: allocator.FormatReservationID(co.ReservationID),
		Lines:         make([]checkoutLineJSON, len(co.Lines)), Corrections: correctionsOut(co.Corrections),
	}
	if co.ConfirmedAtMs != 0 {
		t := formatTime(co.ConfirmedAtMs)
		out.ConfirmedAt = &t
	}
	for i, l := range co.Lines {
		out.Lines[i] = checkoutLineJSON{LineID: l.LineID, Pool: l.Pool, Qty: l.Qty, Price: priceOut(l.Price), State: l.State.String()}
	}
	return out
}

type mergeOutcomeJSON struct {
	Line         cartLineJSON `json:"line"`
	SourceLineID string       `json:"source_line_id"`
	Outcome      string       `json:"outcome"`
	TargetQty    int64        `json:"target_qty"`
	SourceQty    int64        `json:"source_qty"`
}

// ---- proposing ----

// proposeCart replicates a cart command and maps its refusal to the
// contract's error with useful details.
func (s *Server) proposeCart(ctx *fasthttp.RequestCtx, c *cart.Command) (cart.Result, *apiError) {
	if e := c.Validate(); e != nil {
		return cart.Result{}, fromDomain(e, nil)
	}
	var ac allocator.Command // idempotency header parsing is shared
	if e := idempotency(ctx, &ac); e != nil {
		return cart.Result{}, e
	}
	c.IdemKey, c.ReqHash = ac.IdemKey, ac.ReqHash
	res, e := s.replicate(c.AppendEncode(nil))
	if e != nil {
		return cart.Result{}, e
	}
	r, ok := res.(cart.Result)
	if !ok {
		return cart.Result{}, &apiError{Status: fasthttp.StatusInternalServerError, Code: "internal", Message: "unexpected state machine result"}
	}
	s.metrics.cartResult(c.Kind, &r)
	if r.Err != nil {
		var details any
		switch {
		case r.ConflictLine != nil:
			details = map[string]any{"line": lineOut(r.ConflictLine)}
		case r.ConflictCart != nil:
			details = map[string]any{"cart": cartOut(r.ConflictCart)}
		case len(r.Corrections) > 0:
			details = map[string]any{"corrections": correctionsOut(r.Corrections)}
		case r.Checkout != nil:
			details = map[string]any{"checkout": checkoutOut(r.Checkout)}
		}
		return r, fromDomain(r.Err, details)
	}
	return r, nil
}

func cartArg(args []string) (string, *apiError) {
	if _, ok := cart.ParseCartID(args[0]); !ok {
		return "", notFound("no cart " + strconv.Quote(args[0]))
	}
	// A line id that cannot exist is as unknown as any other: 404.
	if len(args) > 1 {
		if _, ok := cart.ParseLineID(args[1]); !ok {
			return "", notFound("no line " + strconv.Quote(args[1]))
		}
	}
	return args[0], nil
}

// ---- handlers ----

func (s *Server) createCart(ctx *fasthttp.RequestCtx, _ []string) *apiError {
	var req createCartReq
	if e := decodeStrict(ctx.Request.Body(), &req); e != nil {
		return e
	}
	if !cart.ValidOwner(req.Owner) {
		return badRequest(`owner must be "anon:<id>" or "user:<id>"`)
	}
	r, e := s.proposeCart(ctx, &cart.Command{Kind: cart.KindCreate, Owner: req.Owner})
	if e != nil {
		return e
	}
	writeJSON(ctx, fasthttp.StatusCreated, cartOut(r.Cart))
	return nil
}

func (s *Server) getCart(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := cartArg(args)
	if e != nil {
		return e
	}
	// A cart page never waits on the leader unless it asks to: contents
	// come from this replica (their age is in as_of), like the claims.
	switch c := string(ctx.QueryArgs().Peek("consistency")); c {
	case "", "stale":
	case "linearizable":
		if _, _, e := s.readBarrier(ctx); e != nil {
			return e
		}
	default:
		return badRequest(`consistency must be "linearizable" or "stale"`)
	}
	if s.carts.Restoring() {
		return unavailable("this replica is installing a snapshot; retry")
	}
	c, err := s.carts.Cart(id)
	if err != nil {
		// A cart just created through another node may not have reached
		// this replica yet: a miss on a follower asks the leader.
		if err.Code == allocator.NotFound && !s.node.IsLeader() {
			return s.forward(ctx)
		}
		return fromDomain(err, nil)
	}
	out := cartOut(c)
	s.decorate(out)
	writeJSON(ctx, fasthttp.StatusOK, out)
	return nil
}

func (s *Server) addLine(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := cartArg(args)
	if e != nil {
		return e
	}
	var req addLineReq
	if e := decodeStrict(ctx.Request.Body(), &req); e != nil {
		return e
	}
	in := cart.LineInput{SKU: req.SKU, Variant: req.Variant, Seller: req.Seller, Fulfillment: req.Fulfillment, Pool: req.Pool}
	for k, v := range req.Attrs {
		in.Attrs = append(in.Attrs, cart.Attr{Key: k, Value: v}) // the cart layer sorts them
	}
	if req.Price != nil {
		in.Price = cart.Price{AmountMinor: req.Price.AmountMinor, Currency: req.Price.Currency, OfferID: req.Price.OfferID}
	}
	r, e := s.proposeCart(ctx, &cart.Command{Kind: cart.KindAddLine, Cart: id, Line: in, Qty: req.Qty})
	if e != nil {
		return e
	}
	writeJSON(ctx, fasthttp.StatusOK, cartOut(r.Cart))
	return nil
}

func (s *Server) setLineQty(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := cartArg(args)
	if e != nil {
		return e
	}
	var req setQtyReq
	if e := decodeStrict(ctx.Request.Body(), &req); e != nil {
		return e
	}
	if req.Qty == nil || req.LineVersion == nil {
		return badRequest("qty and line_version are required")
	}
	r, e := s.proposeCart(ctx, &cart.Command{Kind: cart.KindSetQty, Cart: id, LineID: args[1], Qty: *req.Qty, LineVersion: *req.LineVersion})
	if e != nil {
		return e
	}
	writeJSON(ctx, fasthttp.StatusOK, cartOut(r.Cart))
	return nil
}

func (s *Server) deleteLine(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := cartArg(args)
	if e != nil {
		return e
	}
	if len(ctx.Request.Body()) > 0 {
		if e := decodeStrict(ctx.Request.Body(), &emptyReq{}); e != nil {
			return e
		}
	}
	v, err := strconv.ParseInt(string(ctx.QueryArgs().Peek("line_version")), 10, 64)
	if err != nil {
		return badRequest("line_version query parameter is required")
	}
	r, e := s.proposeCart(ctx, &cart.Command{Kind: cart.KindDeleteLine, Cart: id, LineID: args[1], LineVersion: v})
	if e != nil {
		return e
	}
	writeJSON(ctx, fasthttp.StatusOK, cartOut(r.Cart))
	return nil
}

func (s *Server) mergeCarts(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := cartArg(args)
	if e != nil {
		return e
	}
	var req mergeReq
	if e := decodeStrict(ctx.Request.Body(), &req); e != nil {
		return e
	}
	policy := cart.PolicyReview
	if req.Policy != nil {
		p, ok := cart.ParsePolicy(*req.Policy)
		if !ok {
			return badRequest("policy must be one of review, sum, max, latest, target_wins, source_wins")
		}
		policy = p
	}
	r, e := s.proposeCart(ctx, &cart.Command{Kind: cart.KindMerge, Cart: id, Source: req.Source, Policy: policy})
	if e != nil {
		return e
	}
	report := make([]mergeOutcomeJSON, len(r.Report))
	for i := range r.Report {
		o := &r.Report[i]
		report[i] = mergeOutcomeJSON{Line: lineOut(&o.Line), SourceLineID: o.SourceLineID, Outcome: o.Outcome.String(), TargetQty: o.TargetQty, SourceQty: o.SourceQty}
	}
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Cart   *cartJSON          `json:"cart"`
		Report []mergeOutcomeJSON `json:"report"`
	}{cartOut(r.Cart), report})
	return nil
}

func (s *Server) reviewCart(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := cartArg(args)
	if e != nil {
		return e
	}
	if e := decodeStrict(ctx.Request.Body(), &emptyReq{}); e != nil {
		return e
	}
	r, e := s.proposeCart(ctx, &cart.Command{Kind: cart.KindReview, Cart: id})
	if e != nil {
		return e
	}
	writeJSON(ctx, fasthttp.StatusOK, cartOut(r.Cart))
	return nil
}

func (s *Server) startCheckout(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := cartArg(args)
	if e != nil {
		return e
	}
	var req checkoutReq
	if e := decodeStrict(ctx.Request.Body(), &req); e != nil {
		return e
	}
	if req.ExpectedVersion == nil {
		return badRequest("expected_version is required")
	}
	c := cart.Command{Kind: cart.KindCheckout, Cart: id, ExpectedVersion: *req.ExpectedVersion}
	if req.TTLMs != nil {
		if *req.TTLMs < allocator.MinTTLMs || *req.TTLMs > allocator.MaxTTLMs {
			return badRequest("ttl_ms must be between 1 and 2592000000")
		}
		c.TTLMs = *req.TTLMs
	}
	if req.Mode != nil {
		switch *req.Mode {
		case "all_or_nothing":
		case "partial":
			c.Partial = true
		default:
			return badRequest(`mode must be "all_or_nothing" or "partial"`)
		}
	}
	r, e := s.proposeCart(ctx, &c)
	if e != nil {
		return e
	}
	status := fasthttp.StatusOK
	if r.Created { // remembered too: a replay answers 201 again
		status = fasthttp.StatusCreated
	}
	writeJSON(ctx, status, checkoutOut(r.Checkout))
	return nil
}

func checkoutArg(args []string) (string, *apiError) {
	if _, ok := cart.ParseCheckoutID(args[0]); !ok {
		return "", notFound("no checkout " + strconv.Quote(args[0]))
	}
	return args[0], nil
}

func (s *Server) getCheckout(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := checkoutArg(args)
	if e != nil {
		return e
	}
	if _, _, e := s.readBarrier(ctx); e != nil {
		return e
	}
	if s.carts.Restoring() {
		return unavailable("this replica is installing a snapshot; retry")
	}
	co, err := s.carts.Checkout(id)
	if err != nil {
		return fromDomain(err, nil)
	}
	writeJSON(ctx, fasthttp.StatusOK, checkoutOut(co))
	return nil
}

func (s *Server) confirmCheckout(ctx *fasthttp.RequestCtx, args []string) *apiError {
	id, e := checkoutArg(args)
	if e != nil {
		return e
	}
	if e := decodeStrict(ctx.Request.Body(), &emptyReq{}); e != nil {
		return e
	}
	r, e := s.proposeCart(ctx, &cart.Command{Kind: cart.KindConfirmCheckout, Checkout: id})
	if e != nil {
		return e
	}
	writeJSON(ctx, fasthttp.StatusOK, checkoutOut(r.Checkout))
	return nil
}
