package chaos

import (
	"fmt"
	"testing"
	"time"
)

// TestChaosDiskFull fills the disk of a follower, then of the leader,
// under load: the node must stop acknowledging writes and say so (health
// fails, writes sent to it get 503) or stop (fail-stop), while the other
// two carry on; nothing acknowledged may be lost.
func TestChaosDiskFull(t *testing.T) {
	e := newEnv(t, 3, ciSeed+1, WorkloadConfig{Workers: 8, ColdPools: 20}, "go test ./chaos -run TestChaosDiskFull -count=1 -v")
	r, c, ctx := e.run, e.run.C, e.ctx
	r.sleep(ctx, 2*time.Second)

	fill := func(role string, i int) {
		t.Helper()
		start := time.Now()
		r.logf("disk full on %s %s", role, c.Nodes[i].ID)
		e.must(c.SetDiskFull(i, true))
		// It says so: health fails (or the process stopped).
		health := 200
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if health = c.Health(i); health != 200 {
				break
			}
		}
		exited, _ := c.Exited(i)
		r.Checks.Add(fmt.Sprintf("a full disk fails health (%s)", role), health != 200,
			"health %d after the disk filled (0: process gone; exited=%v)", health, exited)
		// A write sent to it is not acknowledged.
		var got []string
		acked := 0
		for n := range 5 {
			key := fmt.Sprintf("diskfull-%s-%d", role, n)
			body := fmt.Sprintf(`{"buyer":"df-%s-%d","lines":[{"pool":%q,"qty":1}]}`, role, n, probePool)
			st, b, err := c.directWrite(ctx, i, "POST", "/v1/reservations", body, key)
			if st == 201 || st == 200 {
				acked++
			}
			got = append(got, fmt.Sprintf("%d %v %.60s", st, err, b))
		}
		r.Checks.Add(fmt.Sprintf("a node with a full disk acknowledges no write (%s)", role), acked == 0, "%v", got)
		// The others carry on.
		if avail, err := r.probeMajority(ctx, start, i); err != nil {
			r.Checks.Add(fmt.Sprintf("the others accept writes while %s's disk is full", role), false, "%v", err)
		} else {
			r.Checks.Add(fmt.Sprintf("the others accept writes while %s's disk is full", role), true, "first write after %s", avail.Round(time.Millisecond))
		}
		r.sleep(ctx, 2*time.Second)
		// Space comes back; a latched store needs a restart.
		e.must(c.SetDiskFull(i, false))
		c.Kill(i)
		c.Reap(i)
		e.must(r.restart(i))
		r.note("disk full ("+role+"), then restart", time.Since(start))
	}
	l, err := r.leader()
	e.must(err)
	fill("follower", (l+1)%len(c.Nodes))
	l, err = r.leader()
	e.must(err)
	fill("leader", l)
	r.sleep(ctx, 2*time.Second)
	e.finish()
}
