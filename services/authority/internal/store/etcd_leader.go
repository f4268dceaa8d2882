package store

import (
	"context"
	"fmt"
	"math"
	"os"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// leaderBucket is where, under the store's prefix, the election of the
// replica that runs the cluster-wide background work keeps its keys: one
// per candidate, each bound to its candidate's lease; the oldest leads.
// It is not part of the store's data (Check skips it).
const leaderBucket = "leader"

// etcdElector is an etcd election (client/v3/concurrency) under the
// store's prefix.
type etcdElector struct {
	s   *Etcd
	ttl int // seconds
	id  string
}

func newEtcdElector(s *Etcd, opts ElectorOptions) *etcdElector {
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = DefaultLeaderTTL
	}
	secs := int(math.Ceil(ttl.Seconds()))
	id := opts.ID
	if id == "" {
		host, _ := os.Hostname()
		id = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	return &etcdElector{s: s, ttl: max(secs, 1), id: id}
}

// electionPrefix is the election's key prefix.
func (e *etcdElector) electionPrefix() string {
	return e.s.prefix + leaderBucket + "/"
}

// Campaign takes a lease (bounded by the request timeout: a cluster
// without quorum answers ErrUnavailable), enters the election with it and
// waits until every older candidate is gone. The term ends when the lease
// can no longer be renewed (etcd's client gives up on it after its TTL
// without an answer, the time after which another replica may lead) or
// at Resign.
func (e *etcdElector) Campaign(ctx context.Context) (Term, error) {
	if err := e.s.usable(ctx); err != nil {
		return nil, err
	}
	gctx, cancel := context.WithTimeout(ctx, e.s.timeout)
	lease, err := e.s.cli.Grant(gctx, int64(e.ttl))
	cancel()
	if err != nil {
		return nil, fmt.Errorf("store: etcd election lease: %w", e.s.mapErr(ctx, err))
	}
	// The session's own context must outlive ctx: the term runs on after
	// Campaign returns, until Resign or the lease's loss.
	sess, err := concurrency.NewSession(e.s.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(e.ttl),
		concurrency.WithContext(context.Background()))
	if err != nil {
		e.revoke(lease.ID)
		return nil, fmt.Errorf("store: etcd election session: %w", e.s.mapErr(ctx, err))
	}
	// A lease lost while waiting must end the wait: etcd deletes the
	// candidate's key then, and the wait for older keys alone would
	// otherwise end in a leadership without a key.
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-sess.Done():
			stop()
		case <-cctx.Done():
		}
	}()
	el := concurrency.NewElection(sess, e.electionPrefix())
	if err := el.Campaign(cctx, e.id); err != nil {
		e.end(sess)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("store: etcd election: %w", e.s.mapErr(ctx, err))
	}
	// Still the holder of the oldest key, with a live lease?
	vctx, cancel := context.WithTimeout(ctx, e.s.timeout)
	resp, err := e.s.cli.Get(vctx, el.Key())
	cancel()
	if err == nil && (len(resp.Kvs) == 0 || resp.Kvs[0].Lease != int64(sess.Lease())) {
		err = fmt.Errorf("%w: the election key was lost while campaigning", ErrUnavailable)
	}
	if err == nil {
		select {
		case <-sess.Done():
			err = fmt.Errorf("%w: the election lease was lost while campaigning", ErrUnavailable)
		default:
		}
	}
	if err != nil {
		e.end(sess)
		return nil, fmt.Errorf("store: etcd election: %w", e.s.mapErr(ctx, err))
	}
	return &etcdTerm{e: e, sess: sess, el: el}, nil
}

// revoke gives a lease up, bounded by the request timeout; a lease that
// cannot be revoked expires after its TTL.
func (e *etcdElector) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), e.s.timeout)
	defer cancel()
	_, _ = e.s.cli.Revoke(ctx, id)
}

// end stops renewing a session's lease and revokes it, bounded by the
// request timeout (concurrency.Session.Close waits up to the TTL).
func (e *etcdElector) end(sess *concurrency.Session) {
	sess.Orphan()
	e.revoke(sess.Lease())
}

// etcdTerm is a leadership held through a session's lease.
type etcdTerm struct {
	e    *etcdElector
	sess *concurrency.Session
	el   *concurrency.Election

	once sync.Once
	err  error
}

// Done is closed when the lease is lost or the term resigned.
func (t *etcdTerm) Done() <-chan struct{} { return t.sess.Done() }

// Resign deletes the election key and revokes the lease, so that the next
// candidate leads at once instead of after the TTL.
func (t *etcdTerm) Resign(ctx context.Context) error {
	t.once.Do(func() {
		t.err = t.el.Resign(ctx)
		t.e.end(t.sess)
	})
	return t.err
}
