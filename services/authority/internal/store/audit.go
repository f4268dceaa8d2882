package store

import (
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ListAudit returns up to limit audit records of an organization with
// revision > after, oldest first. limit <= 0 means DefaultPageSize; it is
// capped at MaxPageSize. The empty organization selects the
// deployment-wide records (signing keys), not every organization's: a
// missing organization id never widens what a caller sees.
func (s *Bolt) ListAudit(ctx context.Context, orgID string, after uint64, limit int) ([]AuditRecord, error) {
	limit = pageSize(limit)
	prefix := orgPrefix(orgID)
	var out []AuditRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		if after == ^uint64(0) {
			return nil
		}
		audit := tx.Bucket(bucketAudit)
		c := tx.Bucket(bucketAuditByOrg).Cursor()
		for k, _ := c.Seek(auditOrgKey(orgID, after+1)); hasPrefix(k, prefix) && len(out) < limit; k, _ = c.Next() {
			if len(k) != len(prefix)+8 {
				return fmt.Errorf("%w: audit index key of %d bytes", ErrCorrupt, len(k))
			}
			rev := binary.BigEndian.Uint64(k[len(prefix):])
			v := audit.Get(be(rev))
			if v == nil {
				return fmt.Errorf("%w: audit index names revision %d that is not stored", ErrCorrupt, rev)
			}
			a, err := decodeAudit(rev, v)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
