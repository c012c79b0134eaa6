package api

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/holdfast/holdfast/allocator"
)

// refusals answers, on the leader, the reserve requests its applied state
// certainly refuses without a log entry (allocator.Machine.Precheck after
// a read barrier, so the answer is a linearizable read), and records them
// afterwards in batches (allocator.KindRefusals): their demand, and their
// answers under their idempotency keys. In a sold-out drop that is almost
// every request; none of them waits for a quorum's fsync, and followers
// apply one command per batch instead of one per request.
//
// A refusal answered under an Idempotency-Key is kept here until its batch
// is applied, so a retry meanwhile replays it. If leadership changes before
// the batch commits, the batch is lost: a retry with that key is then
// decided afresh (and may succeed if units came back). Nothing was held or
// sold by a refusal, so nothing acknowledged is lost (docs/design.md).
type refusals struct {
	node    Node
	alloc   *allocator.Machine
	log     *slog.Logger
	timeout time.Duration

	mu       sync.Mutex
	queue    []allocator.Refusal
	inFlight int                       // taken by the flusher, not yet applied
	pending  map[string]pendingRefusal // by idempotency key, until applied
	flushing bool
}

type pendingRefusal struct {
	hash [allocator.HashLen]byte
	err  *allocator.Error
}

const (
	// maxOutstandingRefusals bounds refusals answered but not yet applied;
	// past it requests take the log path, which has its own back-pressure.
	maxOutstandingRefusals = 1 << 16
	// maxRefusalBatchBytes bounds one KindRefusals command's encoding.
	maxRefusalBatchBytes = 128 << 10
)

func newRefusals(node Node, alloc *allocator.Machine, log *slog.Logger, timeout time.Duration) *refusals {
	return &refusals{node: node, alloc: alloc, log: log, timeout: timeout, pending: make(map[string]pendingRefusal)}
}

// try answers c, a validated reserve command with its idempotency key and
// hash set, if that needs no log entry; ok is false otherwise.
func (f *refusals) try(ctx context.Context, c *allocator.Command) (res allocator.Result, ok bool) {
	f.mu.Lock()
	p, seen := f.pending[c.IdemKey]
	full := len(f.queue)+f.inFlight >= maxOutstandingRefusals
	f.mu.Unlock()
	if c.IdemKey != "" && seen {
		if p.hash != c.ReqHash {
			return allocator.Result{Err: allocator.MismatchError(c.IdemKey)}, true
		}
		return allocator.Result{Err: p.err, Replayed: true}, true
	}
	if full || f.node.ReadBarrier(ctx) != nil {
		return allocator.Result{}, false
	}
	res, fresh, ok := f.alloc.Precheck(c, f.node.NowMs())
	if !ok {
		return allocator.Result{}, false
	}
	if fresh {
		f.add(allocator.Refusal{IdemKey: c.IdemKey, ReqHash: c.ReqHash, Err: res.Err})
	}
	return res, true
}

func (f *refusals) add(r allocator.Refusal) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, r)
	if r.IdemKey != "" {
		f.pending[r.IdemKey] = pendingRefusal{hash: r.ReqHash, err: r.Err}
	}
	if !f.flushing {
		f.flushing = true
		go f.flush()
	}
}

// flush proposes the queue in batches, one at a time, until it is empty.
// One batch in flight is enough: refusals queue up while it commits, so
// batches grow with the load.
func (f *refusals) flush() {
	var buf []byte
	for {
		f.mu.Lock()
		n, size := 0, 0
		for n < len(f.queue) && n < allocator.MaxRefusals && size < maxRefusalBatchBytes {
			size += refusalSize(&f.queue[n])
			n++
		}
		if n == 0 {
			f.flushing = false
			f.queue = nil // drop the grown backing array
			f.mu.Unlock()
			return
		}
		batch := append([]allocator.Refusal(nil), f.queue[:n]...)
		f.queue = append(f.queue[:0], f.queue[n:]...)
		f.inFlight += n
		f.mu.Unlock()

		cmd := allocator.Command{Kind: allocator.KindRefusals, Refusals: batch}
		buf = cmd.AppendEncode(buf[:0])
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		_, err := f.node.Propose(ctx, buf)
		cancel()
		if err != nil {
			// Lost with this leadership: the answers stand, their keys are
			// decided afresh on a retry, their demand goes uncounted.
			f.log.Warn("refusals not recorded", "count", n, "err", err)
		}
		f.mu.Lock()
		f.inFlight -= n
		for i := range batch {
			if k := batch[i].IdemKey; k != "" && f.pending[k].err == batch[i].Err {
				delete(f.pending, k)
			}
		}
		f.mu.Unlock()
	}
}

// refusalSize bounds the encoding of r.
func refusalSize(r *allocator.Refusal) int {
	n := 24 + len(r.IdemKey) + allocator.HashLen
	for _, l := range r.Err.Lines {
		n += 16 + len(l.Pool)
	}
	return n
}
