package store

import "context"

// ProbeWrite commits a transaction that changes nothing the store holds
// (no revision is taken): it goes through the same commit path, group
// commit and fsync as every mutation, so a hung, frozen, full or read-only
// disk, or an etcd cluster without quorum, makes it hang or fail. The
// authority's write probe calls it to turn health NOT_SERVING while
// writes cannot commit.
func (s *Bolt) ProbeWrite(ctx context.Context) error {
	_, err := s.mutate(ctx, func(*writer) error { return nil })
	return err
}

// ProbeWrite takes the write path up to the commit: the write lock and a
// linearizable read of the head, which needs a quorum of the etcd cluster
// as a write does. It writes nothing (a mutation that changes nothing is
// not sent). See Bolt.ProbeWrite.
func (s *Etcd) ProbeWrite(ctx context.Context) error {
	_, err := s.mutate(ctx, func(*writer) error { return nil })
	return err
}
