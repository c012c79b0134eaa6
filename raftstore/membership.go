package raftstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Membership changes are logged by the event watcher (events.go) on every
// node, as "membership changed" and "leader elected": nothing here logs.

// Membership errors. ErrNotLeader, ErrClosed and ErrTimeout (see node.go)
// may also come back: those are safe to retry.
var (
	// ErrNoSuchMember: the id is not in the cluster configuration.
	ErrNoSuchMember = errors.New("raftstore: no such member")
	// ErrMemberConflict: the change contradicts the configuration (another
	// member already has that Raft address, or removing the last voter).
	ErrMemberConflict = errors.New("raftstore: membership conflict")
)

// configChangeTimeout bounds how long a membership change waits to be
// appended to the leader's log; committing it is bounded by ctx.
const configChangeTimeout = 5 * time.Second

// Members returns the current cluster configuration (voters and
// non-voters) with the API addresses announced through the log.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, mapRaftErr(err)
	}
	_, lid := n.raft.LeaderWithID()
	var out []Member
	for _, srv := range f.Configuration().Servers {
		out = append(out, Member{
			ID:       string(srv.ID),
			RaftAddr: string(srv.Address),
			APIAddr:  n.fsm.member(string(srv.ID)),
			Suffrage: srv.Suffrage.String(),
			Leader:   srv.ID == lid,
		})
	}
	return out, nil
}

// AddMember adds a server to the cluster, as a voter or, with voter false,
// as a non-voter that receives the log but neither votes nor counts for
// commitment. Adding a member that is already there with the same address
// (and at least the same suffrage) changes nothing, so a retry is safe; a
// non-voter added again as a voter is promoted. apiAddr, if set, is
// recorded through the log so that followers can forward to the member
// once it leads. It must run on the leader.
//
// The safe way to grow a cluster is to add a node as a non-voter, wait
// until it has caught up (WaitApplied on that node), then add it as a
// voter: a voter that is still installing a snapshot counts towards the
// quorum and would stall commits meanwhile.
func (n *Node) AddMember(ctx context.Context, id, raftAddr, apiAddr string, voter bool) error {
	if id == "" || raftAddr == "" {
		return fmt.Errorf("%w: id and raft address are required", ErrMemberConflict)
	}
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	members, err := n.Members()
	if err != nil {
		return err
	}
	same := false
	for _, m := range members {
		if m.ID != id && m.RaftAddr == raftAddr {
			return fmt.Errorf("%w: raft address %s belongs to %s", ErrMemberConflict, raftAddr, m.ID)
		}
		if m.ID == id && m.RaftAddr == raftAddr && (m.Suffrage == raft.Voter.String() || !voter) {
			same = true
		}
	}
	if !same {
		var f raft.IndexFuture
		if voter {
			f = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, configChangeTimeout)
		} else {
			f = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, configChangeTimeout)
		}
		if err := waitFuture(ctx, f); err != nil {
			return err
		}
	}
	if apiAddr != "" && n.fsm.member(id) != apiAddr {
		if err := waitFuture(ctx, n.raft.Apply(encodeMember(id, apiAddr), n.cfg.ApplyTimeout)); err != nil {
			return err
		}
	}
	return nil
}

// RemoveMember removes a server from the cluster. Removing the leader
// itself is allowed: it steps down once the change commits and the others
// elect a new leader. The last voter cannot be removed. It must run on the
// leader.
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	members, err := n.Members()
	if err != nil {
		return err
	}
	found := false
	for _, m := range members {
		if m.ID != id {
			continue
		}
		found = true
		if m.Suffrage == raft.Voter.String() && countVoters(members) == 1 {
			return fmt.Errorf("%w: %s is the last voter", ErrMemberConflict, id)
		}
	}
	if !found {
		return fmt.Errorf("%w: %s", ErrNoSuchMember, id)
	}
	if err := waitFuture(ctx, n.raft.RemoveServer(raft.ServerID(id), 0, configChangeTimeout)); err != nil {
		return err
	}
	return nil
}

func countVoters(members []Member) int {
	k := 0
	for _, m := range members {
		if m.Suffrage == raft.Voter.String() {
			k++
		}
	}
	return k
}

// TransferLeadership hands leadership to the voter id, or with id empty
// to the most up-to-date other voter, and waits (bounded by ctx) until
// another node leads. It returns the new leader's id. It must run on the
// leader.
func (n *Node) TransferLeadership(ctx context.Context, id string) (string, error) {
	if n.raft.State() != raft.Leader {
		return "", ErrNotLeader
	}
	var f raft.Future
	if id == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		if id == n.cfg.ID {
			return id, nil // already leads
		}
		members, err := n.Members()
		if err != nil {
			return "", err
		}
		addr := ""
		for _, m := range members {
			if m.ID == id && m.Suffrage == raft.Voter.String() {
				addr = m.RaftAddr
			}
		}
		if addr == "" {
			return "", fmt.Errorf("%w: %s is not a voter", ErrNoSuchMember, id)
		}
		f = n.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	if err := waitFuture(ctx, f); err != nil {
		return "", err
	}
	// The transfer future returns once the target was told to campaign;
	// wait until it (or another node) actually leads.
	for {
		_, lid := n.raft.LeaderWithID()
		if lid != "" && string(lid) != n.cfg.ID {
			return string(lid), nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("raftstore: waiting for a new leader: %w", ctx.Err())
		case <-n.closed:
			return "", ErrClosed
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// WaitApplied waits until this node has applied the log up to index (a
// joining node uses it to wait until it has caught up with the leader).
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	for n.raft.AppliedIndex() < index {
		select {
		case <-ctx.Done():
			return fmt.Errorf("raftstore: applied %d of %d: %w", n.raft.AppliedIndex(), index, ctx.Err())
		case <-n.closed:
			return ErrClosed
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// waitFuture waits for a raft future, bounded by ctx. Giving up does not
// cancel the operation: a membership change may still commit.
func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return nil
		}
		if err != nil && err.Error() == "cannot find peer" {
			return fmt.Errorf("%w: no other voter to take over", ErrMemberConflict)
		}
		return mapRaftErr(err)
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	}
}
