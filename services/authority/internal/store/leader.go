package store

import (
	"context"
	"sync"
	"time"
)

// Elector decides which of the processes sharing a store runs the
// cluster-wide background work (compaction, key activation, later jobs such
// as webhook delivery): at most one at a time, as far as a lease can tell.
// The work must stay correct if two ever run it at once (a leader cut off
// from etcd keeps running until its lease is seen expired): every such job
// is idempotent.
type Elector interface {
	// Campaign blocks until this process leads, or ctx ends (its error
	// is returned), or the election fails (retry later).
	Campaign(ctx context.Context) (Term, error)
}

// Term is one stretch of leadership.
type Term interface {
	// Done is closed when leadership is lost: the lease expired or could
	// not be renewed, or the term was resigned.
	Done() <-chan struct{}
	// Resign ends the term and lets another process lead at once.
	Resign(ctx context.Context) error
}

// ElectorOptions configures NewElector.
type ElectorOptions struct {
	// TTL is the lease of an etcd leader: a leader that stops renewing it
	// (crashed, cut off) is replaced after about this long. Whole seconds,
	// at least one; DefaultLeaderTTL when zero.
	TTL time.Duration
	// ID names this process in the election key's value (for operators:
	// `etcdctl get --prefix <prefix>leader/`); never a secret.
	ID string
}

// DefaultLeaderTTL is the default lease of an etcd leader.
const DefaultLeaderTTL = 10 * time.Second

// NewElector returns the elector of st: an etcd election under the store's
// prefix for an Etcd store, and for any other store (a bbolt file, which
// one process holds) one that makes this process the leader at once.
func NewElector(st Store, opts ElectorOptions) Elector {
	if e, ok := st.(*Etcd); ok {
		return newEtcdElector(e, opts)
	}
	return soleElector{}
}

// soleElector is the election of a store only one process opens.
type soleElector struct{}

func (soleElector) Campaign(ctx context.Context) (Term, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &soleTerm{done: make(chan struct{})}, nil
}

// soleTerm lasts until resigned.
type soleTerm struct {
	once sync.Once
	done chan struct{}
}

func (t *soleTerm) Done() <-chan struct{} { return t.done }

func (t *soleTerm) Resign(context.Context) error {
	t.once.Do(func() { close(t.done) })
	return nil
}
