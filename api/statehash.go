package api

import (
	"encoding/hex"

	"github.com/valyala/fasthttp"
)

// stateHashJSON is the optional state_hash field of GET /v1/cluster
// (?state_hash=1): the SHA-256 of the allocator's canonical snapshot
// (allocator.Machine.StateHash) and the applied index it was taken at.
// Replicas at the same applied index must have the same hash; the fault
// suite (chaos/) compares them after the cluster converges. Carts live in
// the key-value store and are not covered. Reading it costs a full
// snapshot encoding, so it is only computed when asked for.
type stateHashJSON struct {
	AppliedIndex uint64 `json:"applied_index"`
	SHA256       string `json:"sha256"`
}

// maxStateHashTries bounds the retries of stateHash while entries apply.
const maxStateHashTries = 20

// stateHash hashes the local state between two reads of the applied index
// and retries while they differ. Equal reads still leave a tiny window (an
// entry applied but its index not yet published), so a reader comparing
// replicas retries a mismatch before calling it divergence.
func (s *Server) stateHash() *stateHashJSON {
	// A node that can pause its applies gives an exact pair at once: with
	// a large state, hashing takes longer than the gap between entries
	// (ticks come every second), so the retries below may never settle.
	if c, ok := s.node.(interface{ Consistent(func(uint64)) }); ok {
		var out *stateHashJSON
		c.Consistent(func(idx uint64) {
			sum := s.alloc.StateHash()
			out = &stateHashJSON{AppliedIndex: idx, SHA256: hex.EncodeToString(sum[:])}
		})
		return out
	}
	for range maxStateHashTries {
		before := s.node.Status().AppliedIndex
		sum := s.alloc.StateHash()
		if s.node.Status().AppliedIndex == before {
			return &stateHashJSON{AppliedIndex: before, SHA256: hex.EncodeToString(sum[:])}
		}
	}
	return nil
}

// wantStateHash reports whether GET /v1/cluster asked for the state hash.
func wantStateHash(ctx *fasthttp.RequestCtx) bool {
	return string(ctx.QueryArgs().Peek("state_hash")) == "1"
}
