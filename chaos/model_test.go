package chaos

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// TestModelRejectsOversell: the pool model accepts a legal history and
// rejects one where a pool with one unit granted two holds, or a read saw
// a count no order of the operations explains. (Buyer limits are checked
// by the workload's clients, see buyers.)
func TestModelRejectsOversell(t *testing.T) {
	w := &Workload{pools: []*poolInfo{{ID: "p", OnHand: 1, Limit: 2}}}
	m := w.poolModel(poolState{onHand: 1})
	op := func(client int, in opInput, out opOutput, call, ret int64) porcupine.Operation {
		in.Pool = "p"
		return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
	}
	legal := []porcupine.Operation{
		op(0, opInput{Kind: opReserve, Buyer: "b0", Qty: 1}, opOutput{OK: true, ResID: "r_1"}, 0, 10),
		op(1, opInput{Kind: opReserve, Buyer: "b1", Qty: 1}, opOutput{Code: "sold_out"}, 5, 15),
		op(0, opInput{Kind: opRelease, Buyer: "b0", Qty: 1, ResID: "r_1"}, opOutput{OK: true}, 20, 30),
		op(1, opInput{Kind: opReserve, Buyer: "b1", Qty: 1}, opOutput{Unknown: true}, 31, 100),
		op(2, opInput{Kind: opRead}, opOutput{OK: true, OnHand: 1, Held: 1}, 101, 102),
	}
	if !porcupine.CheckOperations(m, legal) {
		t.Fatal("a legal history was rejected")
	}
	oversell := []porcupine.Operation{
		op(0, opInput{Kind: opReserve, Buyer: "b0", Qty: 1}, opOutput{OK: true, ResID: "r_1"}, 0, 10),
		op(1, opInput{Kind: opReserve, Buyer: "b1", Qty: 1}, opOutput{OK: true, ResID: "r_2"}, 5, 15),
	}
	if porcupine.CheckOperations(m, oversell) {
		t.Fatal("two holds on a one-unit pool were accepted")
	}
	staleRead := []porcupine.Operation{
		op(0, opInput{Kind: opReserve, Buyer: "b0", Qty: 1}, opOutput{OK: true, ResID: "r_1"}, 0, 10),
		op(0, opInput{Kind: opConfirm, Buyer: "b0", Qty: 1, ResID: "r_1"}, opOutput{OK: true}, 20, 30),
		op(1, opInput{Kind: opRead}, opOutput{OK: true, OnHand: 1, Held: 1}, 40, 50), // after the confirm: sold=1
	}
	if porcupine.CheckOperations(m, staleRead) {
		t.Fatal("a read missing an acknowledged confirm was accepted")
	}
	wrongSoldOut := []porcupine.Operation{
		op(0, opInput{Kind: opReserve, Buyer: "b0", Qty: 1}, opOutput{Code: "sold_out"}, 0, 10),
	}
	if porcupine.CheckOperations(m, wrongSoldOut) {
		t.Fatal("sold_out on a pool with a free unit was accepted")
	}
}
