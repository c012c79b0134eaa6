package allocator

import (
	"bytes"
	"os"
	"testing"
)

// TestPoolStats follows one draw pool and one multi-pool reservation
// through every counted event and checks the counts, and that they survive
// a snapshot round trip.
func TestPoolStats(t *testing.T) {
	r := newRig(t, fastClock)
	r.put(dropPoolID, dropConfig(2, 1, "s"))
	r.put("a", poolCfg(10, 1_000, 2_000, 0))
	r.put("b", poolCfg(10, 1_000, 2_000, 0))

	r.at(dropOpenAt - t0)
	var entries []uint64
	for i := range 4 {
		entries = append(entries, r.ok(reserveCmd(dropBuyer(i), ln(dropPoolID, 1))).Reservation.ID)
	}
	r.ok(reserveCmd(dropBuyer(0), ln(dropPoolID, 1))) // a second entry by the same buyer is the first one
	wantStats(t, r.pool(dropPoolID).Stats, PoolStats{Entries: 4})

	r.tick(dropCloseAt - t0) // the close: 2 winners
	wantStats(t, r.pool(dropPoolID).Stats, PoolStats{Entries: 4, Winners: 2, Offers: 2})
	var active []uint64
	for _, id := range entries {
		if r.resv(id).State == StateActive {
			active = append(active, id)
		}
	}
	if len(active) != 2 {
		t.Fatalf("%d active after the close, want 2", len(active))
	}
	r.ok(confirmCmd(active[0]))
	r.ok(releaseCmd(active[1])) // its unit goes to the next in drawn order
	wantStats(t, r.pool(dropPoolID).Stats, PoolStats{Entries: 4, Winners: 2, Offers: 3, Confirmed: 1, Released: 1})

	// The offer expires (offer TTL 10 s); its unit goes to the last waiter.
	r.tick(dropCloseAt - t0 + 10_001)
	got := r.pool(dropPoolID).Stats
	wantStats(t, got, PoolStats{Entries: 4, Winners: 2, Offers: 4, Expired: 1, Confirmed: 1, Released: 1})

	// Two lines in two pools: one count in each; a refusal counts nothing.
	r.at(dropCloseAt - t0 + 20_000)
	id := r.hold("m", ln("a", 1), ln("b", 2))
	r.do(reserveCmd("n", ln("a", 11)))
	r.ok(confirmCmd(id))
	id = r.hold("m2", ln("a", 1), ln("a", 1), ln("b", 1))
	r.tick(dropCloseAt - t0 + 30_000) // expires
	r.resv(id)
	for _, p := range []string{"a", "b"} {
		wantStats(t, r.pool(p).Stats, PoolStats{Expired: 1, Confirmed: 1})
	}

	// A partial reservation counts only in the pools it got units from.
	r.put("c", poolCfg(1, 1_000, 2_000, 0))
	part := reserveCmd("m3", ln("c", 1), ln("b", 1), ln("a", 99))
	part.Partial = true
	pid := r.ok(part).Reservation.ID
	r.ok(confirmCmd(pid))
	wantStats(t, r.pool("c").Stats, PoolStats{Confirmed: 1})
	wantStats(t, r.pool("b").Stats, PoolStats{Expired: 1, Confirmed: 2})
	wantStats(t, r.pool("a").Stats, PoolStats{Expired: 1, Confirmed: 1}) // its line was sold out

	// Counts are state: a restored replica has them, and the snapshot
	// round-trips byte for byte.
	got = r.pool(dropPoolID).Stats
	wantStats(t, got, PoolStats{Entries: 4, Winners: 2, Offers: 4, Expired: 2, Confirmed: 1, Released: 1}) // the last offer expired too
	snap := r.m.Snapshot()
	m2 := New(fastClock)
	if err := m2.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	p, _ := m2.Pool(dropPoolID)
	wantStats(t, p.Stats, got)
	if !bytes.Equal(m2.Snapshot(), snap) {
		t.Fatal("snapshot differs after a restore")
	}
}

func wantStats(t *testing.T, got, want PoolStats) {
	t.Helper()
	if got != want {
		t.Fatalf("pool stats %+v, want %+v", got, want)
	}
}

// TestSetClock: the clock jumps forward in one entry, past the step
// bound, holds past their time expire, and it never goes back.
func TestSetClock(t *testing.T) {
	r := newRig(t, Config{}) // the default step bound: 1 s per entry
	r.put("p", poolCfg(5, 60_000, 120_000, 0))
	id := r.hold("a", ln("p", 2))
	r.at(10) // an hour later by the wall clock, a minute-long hold long gone
	r.ok(Command{Kind: KindSetClock, Delta: t0 + 3_600_000})
	if got := r.m.ClockMs(); got != t0+3_600_000 {
		t.Fatalf("clock %d after the jump", got)
	}
	if v := r.resv(id); v.State != StateExpired {
		t.Fatalf("hold %v after the clock passed its expiry", v.State)
	}
	r.wantPool("p", 0, 0)
	r.ok(Command{Kind: KindSetClock, Delta: t0})
	if got := r.m.ClockMs(); got != t0+3_600_000 {
		t.Fatalf("clock went back to %d", got)
	}
}

// TestRestoreVersion3: a snapshot written before per-pool stats existed
// (testdata/snapshot-v3.bin, by commit a2dbb86: pools a and w, a
// confirmed hold, a release whose unit went to the waitlist, idempotency
// records) restores with zero stats, replays its keys, and is written back
// as the current version.
func TestRestoreVersion3(t *testing.T) {
	old, err := os.ReadFile("testdata/snapshot-v3.bin")
	if err != nil {
		t.Fatal(err)
	}
	if old[0] != 3 {
		t.Fatalf("testdata snapshot has version %d", old[0])
	}
	m := New(Config{})
	if err := m.Restore(bytes.NewReader(old)); err != nil {
		t.Fatal(err)
	}
	a, _ := m.Pool("a")
	w, _ := m.Pool("w")
	if a.Sold != 2 || a.Held != 0 || w.Held != 3 || w.Waiting != 0 || a.Stats != (PoolStats{}) || w.Stats != (PoolStats{}) {
		t.Fatalf("pools after restoring v3: a %+v, w %+v", a, w)
	}
	replay := m.Apply(m.ClockMs(), []Command{{Kind: KindPutPool, Pool: "a", Config: DefaultPoolConfig(10), IdemKey: "put-a", ReqHash: [HashLen]byte{1}}}, nil)[0]
	if !replay.Replayed || replay.Pool == nil || replay.Pool.Config.OnHand != 10 {
		t.Fatalf("replay of a v3 record: %+v", replay)
	}
	snap := m.Snapshot()
	if snap[0] != snapshotVersion {
		t.Fatalf("written back as version %d", snap[0])
	}
	m2 := New(Config{})
	if err := m2.Restore(bytes.NewReader(snap)); err != nil || m2.StateHash() != m.StateHash() {
		t.Fatalf("round trip of the upgraded snapshot: %v", err)
	}
	bad := bytes.Clone(old)
	bad[0] = 2
	if err := New(Config{}).Restore(bytes.NewReader(bad)); err == nil {
		t.Fatal("version 2 restored")
	}
}
