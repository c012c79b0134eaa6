package raftstore

import "context"

// StepDown is a leader's first step of a graceful shutdown (SIGTERM): it
// hands leadership to the most up-to-date other voter and waits, bounded by
// ctx, until a node other than this one leads, so the cluster elects no
// one by timeout and clients see one short pause instead of an election.
// On a follower, or when there is no other voter, it does nothing.
func (n *Node) StepDown(ctx context.Context) error {
	if !n.IsLeader() {
		return nil
	}
	members, err := n.Members()
	if err != nil {
		return err
	}
	if countVoters(members) < 2 {
		return nil
	}
	_, err = n.TransferLeadership(ctx, "")
	return err
}
