package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/ctl"
	"github.com/holdfast/holdfast/raftstore"
)

// Bounds of a graceful shutdown (SIGTERM), step by step: the API drain,
// then the leadership transfer; then main's HTTP shutdown and
// shutdownRaftLimit follow.
const (
	drainLimit    = 5 * time.Second
	stepDownLimit = 3 * time.Second
)

// drainAndStepDown is the first part of SIGTERM's graceful shutdown: from
// now on the API answers new requests 503 unavailable with Retry-After
// (health included, so load balancers move away); the requests already
// admitted finish (bounded by drainLimit); then, if this node leads, it
// hands leadership to another voter and waits until one leads (bounded by
// stepDownLimit), so the cluster does not sit out an election timeout.
// Draining first means no request of this node is cut by the transfer.
// The HTTP server and Raft are closed by the caller afterwards.
func drainAndStepDown(srv *api.Server, node *raftstore.Node, log *slog.Logger) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), drainLimit)
	err := srv.Drain(ctx)
	cancel()
	if err != nil {
		log.Warn("drain incomplete; going on", "err", err)
	}
	wasLeader := node.IsLeader()
	ctx, cancel = context.WithTimeout(context.Background(), stepDownLimit)
	err = node.StepDown(ctx)
	cancel()
	switch {
	case err != nil:
		log.Warn("leadership transfer failed; the others will elect a leader after the election timeout", "err", err)
	case wasLeader:
		lid, _, _ := node.Leader()
		log.Info("leadership handed over", "to", lid, "took", time.Since(start).Round(time.Millisecond))
	}
}

// joinTimeout bounds serve --join: being added, catching up, being promoted.
const joinTimeout = 10 * time.Minute

// joinCluster adds this node to the running cluster that joinURL belongs
// to: first as a non-voter, then (once this node has applied the log up to
// the leader's commit index at that point, through a snapshot or the log)
// as a voter, so the cluster's quorum never waits for a node that is still
// catching up. A node already a voter (a restart) does nothing. The calls
// use HOLDFAST_TOKEN (an admin token, with auth) and HOLDFAST_CA.
func joinCluster(node *raftstore.Node, joinURL string, self ctl.Member, log *slog.Logger) error {
	members, err := node.Members()
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.ID == self.ID && m.Suffrage == "Voter" {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), joinTimeout)
	defer cancel()
	// A signal while joining stops it.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	go func() {
		select {
		case <-sig:
			cancel()
		case <-ctx.Done():
		}
	}()

	c, err := ctl.NewClient(joinURL, os.Getenv("HOLDFAST_TOKEN"), os.Getenv("HOLDFAST_CA"))
	if err != nil {
		return err
	}
	add := func(voter bool) (*ctl.ClusterStatus, error) {
		m := self
		m.Voter = &voter
		for {
			st, err := c.AddMember(ctx, m)
			var ae *ctl.APIError
			if err == nil || (errors.As(err, &ae) && ae.Status != 503) {
				return st, err
			}
			log.Warn("join: cluster not reachable yet; retrying", "url", joinURL, "err", err)
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("join %s: %w (last error: %v)", joinURL, ctx.Err(), err)
			case <-time.After(time.Second):
			}
		}
	}
	st, err := add(false)
	if err != nil {
		return fmt.Errorf("join: adding as non-voter: %w", err)
	}
	log.Info("join: added as non-voter; catching up", "leader", st.Leader, "commit_index", st.CommitIndex)
	if err := node.WaitApplied(ctx, st.CommitIndex); err != nil {
		return fmt.Errorf("join: catching up: %w", err)
	}
	if _, err := add(true); err != nil {
		return fmt.Errorf("join: promoting to voter: %w", err)
	}
	log.Info("join: voter", "id", self.ID)
	return nil
}

// restoreFrom prepares the empty data directory of cfg from a backup file
// (serve --restore).
func restoreFrom(file string, cfg raftstore.Config, log *slog.Logger) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	h, err := raftstore.RestoreBackup(cfg, f)
	if err != nil {
		return err
	}
	log.Info("restored from backup", "file", file, "last_index", h.LastIndex, "cluster_time", h.ClusterTime, "taken_by", h.Node)
	return nil
}
