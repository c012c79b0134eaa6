package cart

import (
	"slices"

	"github.com/holdfast/holdfast/allocator"
)

// merge merges cmd.Source into cmd.Cart under cmd.Policy and retires the
// source. Lines only in the target are left alone; every source line gets
// one report entry, in source order.
func (m *Machine) merge(st Store, pools Pools, now int64, cmd *Command) Result {
	t, tn, e := loadLive(st, cmd.Cart)
	if e != nil {
		return Result{Err: e}
	}
	s, sn, e := loadCart(st, cmd.Source)
	if e != nil {
		return Result{Err: e}
	}
	if s.State == StateMerged {
		if s.MergedInto == t.ID {
			// Already merged here: the same report, nothing changes.
			return Result{Cart: t, Report: s.mergeReport}
		}
		return Result{Err: errorf(allocator.InvalidState, "cart %s was merged into %s", s.ID, s.MergedInto)}
	}

	v := t.Version + 1
	report := make([]MergeOutcome, 0, len(s.Lines))
	conflicts := 0
	for i := range s.Lines {
		sl := &s.Lines[i]
		j := findIdentity(t.Lines, sl.SKU, sl.Variant, sl.Seller, sl.Fulfillment, sl.Attrs)
		if j < 0 {
			if len(t.Lines) >= MaxLines {
				return Result{Err: invalid("the merged cart would have over %d lines", MaxLines)}
			}
			nl := *sl
			nl.Attrs = slices.Clone(sl.Attrs)
			t.nextLine++
			nl.ID = formatID(lineIDPrefix, t.nextLine)
			nl.LineVersion = v
			nl.UpdatedAtMs = now
			out := OutcomeAdded
			if capQty(pools, &nl) {
				out = OutcomeCapped
			}
			t.Lines = append(t.Lines, nl)
			report = append(report, MergeOutcome{Line: nl, SourceLineID: sl.ID, Outcome: out, SourceQty: sl.Qty})
			continue
		}
		tl := &t.Lines[j]
		before := *tl
		// The later line by updated_at; ties go to the target.
		later := tl
		if sl.UpdatedAtMs > tl.UpdatedAtMs {
			later = sl
		}
		var win *Line
		var out Outcome
		qty := int64(0)
		switch cmd.Policy {
		case PolicySum:
			win, out, qty = later, OutcomeSummed, tl.Qty+sl.Qty
			if qty > allocator.MaxQty {
				out, qty = OutcomeCapped, allocator.MaxQty
			}
		case PolicyMax:
			switch {
			case sl.Qty > tl.Qty:
				win, out = sl, OutcomeKeptSource
			case sl.Qty == tl.Qty:
				win, out = tl, OutcomeCollapsed
			default:
				win, out = tl, OutcomeKeptTarget
			}
		case PolicyLatest:
			win, out = later, OutcomeKeptTarget
			if later == sl {
				out = OutcomeKeptSource
			}
		case PolicyTargetWins:
			win, out = tl, OutcomeKeptTarget
		case PolicySourceWins:
			win, out = sl, OutcomeKeptSource
		default: // review
			win, out = later, OutcomeCollapsed
			if sl.Qty != tl.Qty {
				out = OutcomeConflict
				conflicts++
			}
		}
		if qty == 0 {
			qty = win.Qty
		}
		nl := *win
		nl.ID, nl.Attrs, nl.Qty = before.ID, before.Attrs, qty
		if capQty(pools, &nl) && out != OutcomeConflict {
			out = OutcomeCapped
		}
		if nl.Qty == before.Qty && nl.Pool == before.Pool && nl.Price == before.Price && nl.PricedAtMs == before.PricedAtMs {
			nl.LineVersion, nl.UpdatedAtMs = before.LineVersion, before.UpdatedAtMs // unchanged
		} else {
			nl.LineVersion, nl.UpdatedAtMs = v, now
		}
		*tl = nl
		report = append(report, MergeOutcome{Line: nl, SourceLineID: sl.ID, Outcome: out, TargetQty: before.Qty, SourceQty: sl.Qty})
	}

	if conflicts > 0 {
		t.review |= reviewMerge
		m.setReason(t)
	} else if t.State == StateCheckedOut {
		t.State = StateOpen
	}
	m.flagStale(t, now)
	m.commit(st, tn, t, now)

	s.State = StateMerged
	s.MergedInto = t.ID
	s.review = 0
	s.ReviewReason = ""
	s.mergeReport = report
	m.commit(st, sn, s, now)
	return Result{Cart: t, Report: report}
}

// capQty cuts l.Qty to its pool's per-buyer limit and reports whether it
// did.
func capQty(pools Pools, l *Line) bool {
	if pools == nil {
		return false
	}
	if limit, ok := pools.PerBuyerLimit(l.Pool); ok && limit > 0 && l.Qty > limit {
		l.Qty = limit
		return true
	}
	return false
}
