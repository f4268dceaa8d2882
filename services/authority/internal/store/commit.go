package store

import (
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// groupCommitter is a leader/follower group commit, as databases do for
// their write-ahead logs: a mutation that finds no commit in progress
// commits at once, alone; mutations that arrive while a commit runs queue,
// and when it ends one of them (the leader) commits the whole queue in one
// transaction and one fsync. So a lone writer never waits for a timer (as
// with db.Batch), and under load a batch holds what arrived during the
// previous fsync: batches grow with the load and the disk's latency.
//
// As with db.Batch, the functions of a batch run in one transaction, and
// when one fails (an error, not a rejection) the transaction rolls back, the
// failing function runs again alone and the rest run again together: a
// function may run more than once (see mutate). It starts no goroutine: the
// leader is a caller.
type groupCommitter struct {
	db *bolt.DB

	mu      sync.Mutex
	queue   []*commitCall
	leading bool // a leader is committing; new calls queue
}

type commitCall struct {
	fn   func(*bolt.Tx) error
	done chan error // buffered: the result, or errLead
}

// maxGroup bounds the functions of one transaction.
const maxGroup = 1000

// errLead tells a queued call that it is now the leader.
var errLead = errors.New("store: lead the next group commit")

// update runs fn in a write transaction shared with concurrent calls, and
// returns once that transaction has committed (or failed).
func (g *groupCommitter) update(fn func(*bolt.Tx) error) error {
	c := &commitCall{fn: fn, done: make(chan error, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	if g.leading {
		g.mu.Unlock()
		if err := <-c.done; err != errLead {
			return err
		}
		g.mu.Lock() // handed the lead: g.leading is still true
	} else {
		g.leading = true
	}
	n := min(len(g.queue), maxGroup)
	group := append([]*commitCall(nil), g.queue[:n]...)
	g.queue = append(g.queue[:0:0], g.queue[n:]...)
	g.mu.Unlock()

	g.run(group) // answers every call of the group, c included

	g.mu.Lock()
	if len(g.queue) > 0 {
		g.queue[0].done <- errLead
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	return <-c.done
}

// run commits a group, taking out and running alone any function that
// fails.
func (g *groupCommitter) run(group []*commitCall) {
	for len(group) > 0 {
		failed := -1
		err := safeUpdate(g.db, func(tx *bolt.Tx) error {
			for i, c := range group {
				if err := safeCall(c.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 || len(group) == 1 {
			for _, c := range group {
				c.done <- err
			}
			return
		}
		c := group[failed]
		group = append(group[:failed:failed], group[failed+1:]...)
		c.done <- safeUpdate(g.db, func(tx *bolt.Tx) error { return safeCall(c.fn, tx) })
	}
}

// safeCall runs fn, turning a panic into an error: the leader runs other
// callers' functions, and one caller's bug must not take the others' calls
// (or the process) down with it.
func safeCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: panic in a transaction: %v", p)
		}
	}()
	return fn(tx)
}
