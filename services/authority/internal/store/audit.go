package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// pageTagAudit tags the page tokens of ListAudit: base64url (no padding) of
// the tag, the organization's index prefix and the big-endian revision of
// the last record returned. The next page starts after that revision.
const pageTagAudit byte = 'a'

// ListAudit returns one page of an organization's audit records, oldest
// first, and the token of the next page ("" after the last), exactly as
// ListTokens pages: PageSize defaults to DefaultPageSize and is capped at
// MaxPageSize, and a page token this store did not make for the same
// organization is ErrBadPageToken. The empty organization selects the
// deployment-wide records (signing keys), not every organization's: a
// missing organization id never widens what a caller sees.
func (s *Bolt) ListAudit(ctx context.Context, f AuditFilter) ([]AuditRecord, string, error) {
	size := pageSize(f.PageSize)
	prefix := orgPrefix(f.OrgID)
	after, err := decodeAuditPage(prefix, f.PageToken)
	if err != nil {
		return nil, "", err
	}
	var (
		out  []AuditRecord
		next string
	)
	err = s.view(ctx, func(tx *bolt.Tx) error {
		out, next = nil, ""
		if after == ^uint64(0) {
			return nil
		}
		audit := tx.Bucket(bucketAudit)
		c := tx.Bucket(bucketAuditByOrg).Cursor()
		for k, _ := c.Seek(auditOrgKey(f.OrgID, after+1)); hasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) != len(prefix)+8 {
				return fmt.Errorf("%w: audit index key of %d bytes", ErrCorrupt, len(k))
			}
			if len(out) == size {
				// Another record exists: the next page starts after this page.
				next = auditPageToken(f.OrgID, out[len(out)-1].Revision)
				return nil
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
		return nil, "", err
	}
	return out, next, nil
}

// auditPageToken encodes the position after revision rev of org's records.
func auditPageToken(org string, rev uint64) string {
	raw := append([]byte{pageTagAudit}, orgPrefix(org)...)
	raw = binary.BigEndian.AppendUint64(raw, rev)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// decodeAuditPage returns the revision a page token of the organization
// with index prefix prefix continues after; 0 for the first page.
func decodeAuditPage(prefix []byte, token string) (uint64, error) {
	if token == "" {
		return 0, nil
	}
	if len(token) > MaxPageTokenLen {
		return 0, ErrBadPageToken
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) != 1+len(prefix)+8 || raw[0] != pageTagAudit || !bytes.HasPrefix(raw[1:], prefix) {
		return 0, ErrBadPageToken
	}
	return binary.BigEndian.Uint64(raw[1+len(prefix):]), nil
}
