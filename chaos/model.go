package chaos

import (
	"fmt"
	"hash/fnv"
	"time"

	"github.com/anishathalye/porcupine"
)

// The model of one pool, for porcupine. Holds in checked pools live longer
// than the run, so expiry never decides an outcome; what is left is
// deterministic given the order of operations:
//
//   - reserve(qty): sold_out if qty exceeds available; else held
//     (held += qty);
//   - confirm of a hold the client owns: held -= qty, sold += qty;
//   - release of a hold the client owns: held -= qty;
//   - adjust(+delta): on_hand += delta;
//   - read: returns on_hand, held and sold exactly.
//
// A buyer_limit refusal leaves the pool as it was, whatever its state:
// the allocator checks the buyer's limit before availability. Whether it
// was right is checked by the client that owns the buyer (a buyer is used
// by one client, one request at a time, so its units follow that client's
// own sequence of acknowledged operations; see Workload.reserve), and by
// the final state checks.
//
// An operation whose outcome stayed unknown (the client gave up retrying)
// may or may not have taken effect: the model is nondeterministic for it.
// Extensions change no count; they are checked per reservation by the
// workload and by the final state checks.

type opKind uint8

const (
	opReserve opKind = iota
	opConfirm
	opRelease
	opAdjust
	opRead
)

var opNames = [...]string{"reserve", "confirm", "release", "adjust", "read"}

type opInput struct {
	Kind  opKind
	Pool  string
	Buyer string
	Qty   int64
	ResID string
}

type opOutput struct {
	OK      bool
	Unknown bool
	Code    string // sold_out, buyer_limit, ...
	ResID   string
	// A read's answer.
	OnHand, Held, Sold int64
}

// poolState is comparable (==) and cheap to copy.
type poolState struct {
	onHand, held, sold int64
}

// poolModel is the porcupine model of one of the workload's pools, from
// its initial state.
func (w *Workload) poolModel(init poolState) porcupine.Model {
	step := func(st any, input any, output any) []any {
		s := st.(poolState)
		in, out := input.(opInput), output.(opOutput)
		var next []any
		// apply returns the state after the operation took effect, and
		// the outcome the model predicts.
		apply := func() (poolState, opOutput, bool) {
			switch in.Kind {
			case opReserve:
				if out.Code == "buyer_limit" {
					return s, opOutput{Code: "buyer_limit"}, true
				}
				if in.Qty > s.onHand-s.held-s.sold {
					return s, opOutput{Code: "sold_out"}, true
				}
				n := s
				n.held += in.Qty
				return n, opOutput{OK: true}, true
			case opConfirm:
				if s.held < in.Qty {
					return s, opOutput{}, false
				}
				n := s
				n.held -= in.Qty
				n.sold += in.Qty
				return n, opOutput{OK: true}, true
			case opRelease:
				if s.held < in.Qty {
					return s, opOutput{}, false
				}
				n := s
				n.held -= in.Qty
				return n, opOutput{OK: true}, true
			case opAdjust:
				n := s
				n.onHand += in.Qty
				return n, opOutput{OK: true}, true
			case opRead:
				return s, opOutput{OK: true, OnHand: s.onHand, Held: s.held, Sold: s.sold}, true
			}
			return s, opOutput{}, false
		}
		n, pred, ok := apply()
		if !ok {
			return nil
		}
		if out.Unknown {
			next = append(next, s) // it did not happen
			if pred.OK {
				next = append(next, n) // it happened
			}
			return next
		}
		if out.OK != pred.OK || out.Code != pred.Code {
			return nil
		}
		if in.Kind == opRead && (out.OnHand != pred.OnHand || out.Held != pred.Held || out.Sold != pred.Sold) {
			return nil
		}
		return []any{n}
	}
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{init} },
		Step: step,
		Hash: func(st any) uint64 {
			s := st.(poolState)
			h := fnv.New64a()
			fmt.Fprintf(h, "%d/%d/%d", s.onHand, s.held, s.sold)
			return h.Sum64()
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(opInput), output.(opOutput)
			res := "ok"
			switch {
			case out.Unknown:
				res = "unknown"
			case !out.OK:
				res = out.Code
			case in.Kind == opRead:
				res = fmt.Sprintf("on_hand=%d held=%d sold=%d", out.OnHand, out.Held, out.Sold)
			}
			return fmt.Sprintf("%s(%s,%d,%s) -> %s", opNames[in.Kind], in.Buyer, in.Qty, in.ResID, res)
		},
		DescribeState: func(st any) string {
			s := st.(poolState)
			return fmt.Sprintf("on_hand=%d held=%d sold=%d", s.onHand, s.held, s.sold)
		},
	}
	return nm.ToModel()
}

// CheckLinearizable checks each pool's history against the model,
// partition by partition (one pool at a time, each with its own initial
// state). It returns the pools that are not linearizable, with a
// visualization file per failure written to dir, and the pools whose check
// timed out.
func (w *Workload) CheckLinearizable(dir string, timeout time.Duration) (illegal, unknown []string, ops int, err error) {
	byPool := map[string][]porcupine.Operation{}
	for _, op := range w.History() {
		p := op.Input.(opInput).Pool
		byPool[p] = append(byPool[p], op)
	}
	for _, p := range w.pools {
		hist := byPool[p.ID]
		if len(hist) == 0 {
			continue
		}
		ops += len(hist)
		m := w.poolModel(poolState{onHand: p.OnHand})
		res, info := porcupine.CheckOperationsVerbose(m, hist, timeout)
		switch res {
		case porcupine.Illegal:
			illegal = append(illegal, p.ID)
			if dir != "" {
				path := fmt.Sprintf("%s/porcupine-%s.html", dir, p.ID)
				if verr := porcupine.VisualizePath(m, info, path); verr == nil {
					illegal[len(illegal)-1] += " (see " + path + ")"
				}
			}
		case porcupine.Unknown:
			unknown = append(unknown, p.ID)
		}
	}
	return illegal, unknown, ops, nil
}
