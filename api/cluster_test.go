package api_test

import (
	"fmt"
	"testing"
	"time"
)

// TestClusterFailover: three nodes on loopback. Writes go through a
// follower; the leader is killed; a new leader serves within 5 s; nothing
// acknowledged is missing; a node restarted from its data directory
// catches up and converges to the same state hash.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	nodes := startCluster(t, 3)
	leader := waitLeader(t, nodes, 10*time.Second)
	var follower *testNode
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}

	r := do(t, "PUT", follower.url("/v1/pools/sneaker-42"), `{"on_hand": 1000, "per_buyer_limit": 1}`)
	if r.status != 201 {
		t.Fatalf("create pool through follower: %d %s", r.status, r.body)
	}
	if got := r.header.Get("X-Holdfast-Node"); got != leader.id {
		t.Fatalf("X-Holdfast-Node = %q, want the leader %q", got, leader.id)
	}
	if got := r.header.Get("X-Holdfast-Via"); got != follower.id {
		t.Fatalf("X-Holdfast-Via = %q, want %q", got, follower.id)
	}

	// Acknowledged reservations and confirms, all written through a follower.
	acked := map[string]string{} // reservation id -> state acknowledged
	for i := range 40 {
		r := do(t, "POST", follower.url("/v1/reservations"), fmt.Sprintf(`{"buyer":"u-%d","lines":[{"pool":"sneaker-42","qty":1}]}`, i))
		if r.status != 201 {
			t.Fatalf("reserve %d: %d %s", i, r.status, r.body)
		}
		id := r.json(t)["id"].(string)
		acked[id] = "active"
		if i%2 == 0 {
			c := do(t, "POST", follower.url("/v1/reservations/"+id+"/confirm"), "")
			if c.status != 200 {
				t.Fatalf("confirm %s: %d %s", id, c.status, c.body)
			}
			acked[id] = "confirmed"
		}
	}

	killed := time.Now()
	leader.stop(t)
	var survivors []*testNode
	for _, n := range nodes {
		if n != leader {
			survivors = append(survivors, n)
		}
	}
	// The next successful write, retried as a client would.
	var newLeaderAt time.Duration
	for {
		r := do(t, "POST", survivors[0].url("/v1/reservations"), `{"buyer":"after-failover","lines":[{"pool":"sneaker-42","qty":1}]}`, "Idempotency-Key", "after-failover-1")
		if r.status == 201 {
			newLeaderAt = time.Since(killed)
			acked[r.json(t)["id"].(string)] = "active"
			break
		}
		if r.status != 503 {
			t.Fatalf("write after failover: %d %s", r.status, r.body)
		}
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("no successful write within 5 s of killing the leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("first successful write %v after the leader was killed", newLeaderAt)

	for id, state := range acked {
		for _, n := range survivors {
			r := do(t, "GET", n.url("/v1/reservations/"+id), "")
			if r.status != 200 {
				t.Fatalf("%s on %s: %d %s", id, n.id, r.status, r.body)
			}
			if got := r.json(t)["state"]; got != state {
				t.Fatalf("%s on %s is %v, acknowledged %s", id, n.id, got, state)
			}
		}
	}
	p := do(t, "GET", survivors[1].url("/v1/pools/sneaker-42"), "").json(t)
	if p["sold"].(float64) != 20 || p["held"].(float64) != 21 {
		t.Fatalf("pool after failover: sold %v held %v, want 20 and 21", p["sold"], p["held"])
	}

	// The old leader comes back from its data directory and catches up.
	leader.start(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		want := survivors[0].node.Status().AppliedIndex
		h0 := survivors[0].machine.Alloc.StateHash()
		if leader.node.Status().AppliedIndex >= want && leader.machine.Alloc.StateHash() == h0 &&
			survivors[1].machine.Alloc.StateHash() == h0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted node did not converge: applied %d, leader applied %d", leader.node.Status().AppliedIndex, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r = do(t, "GET", leader.url("/v1/pools/sneaker-42?consistency=stale"), "")
	if r.status != 200 || r.json(t)["sold"].(float64) != 20 {
		t.Fatalf("stale read on the restarted node: %d %s", r.status, r.body)
	}
}
