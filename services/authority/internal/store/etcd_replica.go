package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// KeyWatcher is a store that other processes change too (etcd, shared by
// several authority replicas): WatchKeys reports their changes to the
// signing keys, so that each replica's key manager reloads them.
type KeyWatcher interface {
	// WatchKeys calls changed after any process wrote a signing key, and
	// once whenever the watch (re)starts (it may have missed writes),
	// until ctx ends or the store is closed. It returns then.
	WatchKeys(ctx context.Context, changed func())
}

var _ KeyWatcher = (*Etcd)(nil)

// WatchKeys implements KeyWatcher with an etcd watch on the keys under the
// store's keys/ prefix, started at the etcd revision right after the one
// read before calling changed: no write falls between the two.
func (s *Etcd) WatchKeys(ctx context.Context, changed func()) {
	from := s.key(bucketKeys, nil)
	for ctx.Err() == nil && !s.isClosed() {
		resp, err := s.get(ctx, from, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil {
			changed()
			wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), from, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
			for wr := range wch {
				if len(wr.Events) > 0 {
					changed()
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// errEtcdCompacted says a read was pinned at an etcd revision that etcd's
// own history compaction (--auto-compaction-*, `etcdctl compact`) removed
// meanwhile. It is also an errConflict, which mutate retries.
var errEtcdCompacted = errors.New("store: etcd compacted the revision of the read")

// pinnedReadAttempts bounds the retries of a read whose etcd revision is
// compacted away again and again (a compaction retention shorter than the
// read).
const pinnedReadAttempts = 5

// pinnedRead runs read, which reads at one etcd revision (the head's) so
// that it sees one state of the store, and runs it again on a fresh head
// when etcd compacted that revision away meanwhile: the reader gets the
// newer state, never a half-read one nor an internal error.
func (s *Etcd) pinnedRead(ctx context.Context, read func() error) error {
	var err error
	for range pinnedReadAttempts {
		if err = read(); !errors.Is(err, errEtcdCompacted) {
			return err
		}
	}
	return fmt.Errorf("%w: etcd compacted the revision of the read %d times in a row (is --auto-compaction-retention shorter than a read?): %v",
		ErrUnavailable, pinnedReadAttempts, err)
}

// beforePinned runs the test hook, if any, before a read at etcd revision
// rev (0: not pinned).
func (s *Etcd) beforePinned(rev int64) {
	if s.pinnedHook != nil && rev != 0 {
		s.pinnedHook(rev)
	}
}

// CurrentReader is a store whose Revision may lag the commits of other
// processes (etcd: it follows them through a watch): CurrentRevision
// reads the last committed revision itself, linearizably.
type CurrentReader interface {
	CurrentRevision(ctx context.Context) (uint64, error)
}

var _ CurrentReader = (*Etcd)(nil)

// CurrentRevision returns the last revision committed by any process, read
// now (a linearizable etcd read): every mutation acknowledged before the
// call began, through whichever replica, is at or below it.
func (s *Etcd) CurrentRevision(ctx context.Context) (uint64, error) {
	h, err := s.readHead(ctx)
	if err != nil {
		return 0, err
	}
	s.publish(h.rev)
	return h.rev, nil
}

// CurrentRevision returns st's last committed revision including other
// processes' commits: CurrentReader's when st has one, else Revision (a
// store only this process writes, whose Revision is exact).
func CurrentRevision(ctx context.Context, st Store) (uint64, error) {
	if c, ok := st.(CurrentReader); ok {
		return c.CurrentRevision(ctx)
	}
	return st.Revision(), nil
}
