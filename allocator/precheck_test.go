package allocator

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
)

// TestPrecheckMatchesTheLog is the fast path's contract: whenever Precheck
// answers, applying the command through the log at the same time gives the
// same answer, and recording the refusal (a KindRefusals command, through
// its codec) leaves exactly the state the log's refusal leaves: same state
// hash. Random worlds, many pools turning hot and cold, draws, waitlists,
// expiries and idempotency keys (reused with the same and other hashes).
func TestPrecheckMatchesTheLog(t *testing.T) {
	var fresh, replays, declined int
	for seed := range uint64(3) {
		w := newWorld(t, seed, fastClockish)
		for range 1200 {
			w.step()
			c := w.randomReserve()
			nowMs := w.nowMs + int64(w.rng.IntN(600))
			res, isFresh, ok := w.m.Precheck(&c, nowMs)
			if !ok {
				declined++
				continue
			}
			snap := w.m.Snapshot()
			viaLog := restored(t, snap).Apply(nowMs, []Command{c}, nil)[0]
			if !sameAnswer(res, viaLog) {
				t.Fatalf("seed %d: Precheck %+v %+v, the log %+v %+v", seed, res.Err, res.Reservation, viaLog.Err, viaLog.Reservation)
			}
			logged := restored(t, snap)
			logged.Apply(nowMs, []Command{c}, nil)
			recorded := restored(t, snap)
			note := Command{Kind: KindTick}
			if isFresh {
				fresh++
				if res.Err == nil {
					t.Fatalf("seed %d: a fresh Precheck answer that is not a refusal: %+v", seed, res)
				}
				note = Command{Kind: KindRefusals, Refusals: []Refusal{{IdemKey: c.IdemKey, ReqHash: c.ReqHash, Err: res.Err}}}
				dec, err := DecodeCommand(note.AppendEncode(nil))
				if err != nil {
					t.Fatalf("seed %d: refusals command does not decode: %v", seed, err)
				}
				note = dec
			} else {
				replays++
			}
			recorded.Apply(nowMs, []Command{note}, nil)
			if logged.StateHash() != recorded.StateHash() {
				t.Fatalf("seed %d: state after the log's answer differs from the recorded refusal (fresh %v, %+v, cmd %+v)", seed, isFresh, res.Err, c)
			}
		}
	}
	t.Logf("fresh refusals %d, replays %d, declined %d", fresh, replays, declined)
	if fresh < 300 || replays < 50 {
		t.Fatalf("too few fast answers to mean anything: fresh %d replays %d", fresh, replays)
	}
}

// sameAnswer compares everything a client sees of two results.
func sameAnswer(a, b Result) bool {
	view := func(v *ReservationView) any {
		if v == nil {
			return nil
		}
		c := *v
		c.one = [1]LineView{} // storage, not content
		return c
	}
	return reflect.DeepEqual(a.Err, b.Err) && a.Replayed == b.Replayed && a.Created == b.Created &&
		reflect.DeepEqual(a.Pool, b.Pool) && reflect.DeepEqual(view(a.Reservation), view(b.Reservation))
}

// fastClockish lets entries step the clock far enough for the random
// worlds' gaps (nowMs+600 above) without the step bound changing outcomes.
var fastClockish = Config{MaxClockStepMs: 10_000}

func restored(t *testing.T, snap []byte) *Machine {
	t.Helper()
	m := New(fastClockish)
	if err := m.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	return m
}

// randomReserve is a reserve command, a quarter of them under an
// idempotency key: a new key, or a used one with its own or another hash.
func (w *world) randomReserve() Command {
	var c Command
	for c.Kind != KindReserve {
		c = w.randomCommand()
	}
	switch k := w.rng.IntN(8); {
	case k == 0:
		c.IdemKey = fmt.Sprintf("pre-%d", w.rng.Uint64())
	case k == 1 && len(w.idemCmds) > 0:
		key := fmt.Sprintf("k-%d", w.rng.IntN(len(w.idemCmds)))
		if old, ok := w.idemCmds[key]; ok {
			c = old // a retry: same key, same request
			if w.rng.IntN(3) == 0 {
				c.ReqHash[2]++ // the same key, another request
			}
		}
	}
	return c
}

// TestPrecheckDeclines pins the cases the fast path must leave to the log.
func TestPrecheckDeclines(t *testing.T) {
	r := newRig(t, fastClock)
	r.put("p", limited(poolCfg(1, 1_000, 2_000, 0), 1))
	wl := poolCfg(1, 1_000, 2_000, 0)
	wl.Waitlist = WaitlistConfig{Enabled: true, OfferTTLMs: 1_000, WaitTTLMs: 10_000}
	r.put("w", wl)
	r.put(dropPoolID, dropConfig(1, 1, "s"))
	r.hold("a", ln("p", 1))
	r.hold("a", ln("w", 1))
	now := t0 + 10

	check := func(name string, c Command, nowMs int64, want bool) {
		t.Helper()
		res, _, ok := r.m.Precheck(&c, nowMs)
		if ok != want {
			t.Fatalf("%s: Precheck ok=%v (%+v), want %v", name, ok, res.Err, want)
		}
	}
	check("sold out", reserveCmd("b", ln("p", 1)), now, true)
	check("over the limit", reserveCmd("a", ln("p", 1)), now, true)
	check("would hold", reserveCmd("b", ln("w", 1), ln("p", 0+1)), now, true) // all or nothing: refused
	partial := reserveCmd("b", ln("p", 1))
	partial.Partial = true
	check("partial, nothing fits", partial, now, true)
	check("unknown pool", reserveCmd("b", ln("nope", 1)), now, false)
	wait := reserveCmd("b", ln("w", 1))
	wait.Wait = true
	check("would queue", wait, now, false)
	check("open draw", reserveCmd("b", ln(dropPoolID, 1)), now, false)
	check("a hold is due", reserveCmd("b", ln("p", 1)), t0+1_000, false)
	bad := reserveCmd("b", ln("p", 1))
	bad.TTLMs = 3_000 // over max_hold_ttl_ms: the log answers invalid_argument
	check("invalid ttl", bad, now, false)
	check("not a reserve", confirmCmd(1), now, false)
	r.put("q", poolCfg(5, 1_000, 2_000, 0))
	check("it fits", reserveCmd("b", ln("q", 1)), now, false)
}
