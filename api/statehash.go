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

// stateHash hashes the local state with the node's applies paused, so the
// applied index and the hash belong together. (Hashing a large state takes
// longer than the gap between entries, so reading the index before and
// after would never settle.)
func (s *Server) stateHash() *stateHashJSON {
	var out *stateHashJSON
	s.node.Consistent(func(idx uint64) {
		sum := s.alloc.StateHash()
		out = &stateHashJSON{AppliedIndex: idx, SHA256: hex.EncodeToString(sum[:])}
	})
	return out
}

// wantStateHash reports whether GET /v1/cluster asked for the state hash.
func wantStateHash(ctx *fasthttp.RequestCtx) bool {
	return string(ctx.QueryArgs().Peek("state_hash")) == "1"
}
