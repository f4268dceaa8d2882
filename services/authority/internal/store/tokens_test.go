package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestRevokeTokensIsAtomic makes the bulk revocation fail part-way (a token
// record the transaction cannot decode) and checks that nothing changed.
func TestRevokeTokensIsAtomic(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []commitMode{commitGroup, commitBatch, commitUpdate} {
		t.Run(fmt.Sprint("mode ", mode), func(t *testing.T) {
			s := openTest(t)
			setMode(s, mode)
			var ids []string
			for i := range 10 {
				x := tok("o", fmt.Sprint("t", i), "u", time.Hour)
				mustCreate(t, s, x)
				ids = append(ids, x.ID)
			}
			// Corrupt the newest token: it is revoked last (ids sort by creation).
			last := ids[len(ids)-1]
			var saved []byte
			if err := s.db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketTokens)
				saved = append([]byte(nil), b.Get([]byte(last))...)
				return b.Put([]byte(last), []byte{recordV1, 0xff})
			}); err != nil {
				t.Fatal(err)
			}
			before := s.Revision()
			if _, _, err := s.RevokeTokens(ctx, "o", "", auditFor(AuditTokensRevoked, t0)); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			if s.Revision() != before {
				t.Errorf("revision moved %d → %d", before, s.Revision())
			}
			for _, id := range ids[:len(ids)-1] {
				got, err := s.GetToken(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if got.RevokeRev != 0 {
					t.Errorf("token %s revoked by a failed bulk revocation", id)
				}
			}
			if evs, err := s.EventsAfter(ctx, before, 10); err != nil || len(evs) != 0 {
				t.Errorf("events after the failure: %v, %v", evs, err)
			}
			if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTokens).Put([]byte(last), saved) }); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestListTokensScanBudget lists with a filter that matches nothing among
// more tokens than one call may read: pages come back empty with a token,
// and the listing still ends.
func TestListTokensScanBudget(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	const n = maxScanPerPage + 500
	if err := fillTokens(s, "o", n, 0); err != nil {
		t.Fatal(err)
	}
	var pages int
	page := ""
	for {
		toks, next, err := s.ListTokens(ctx, ListFilter{OrgID: "o", State: StateRevoked, Now: t0, PageToken: page})
		if err != nil {
			t.Fatal(err)
		}
		if len(toks) != 0 {
			t.Fatalf("listed %d revoked tokens", len(toks))
		}
		pages++
		if next == "" {
			break
		}
		page = next
	}
	if pages != 2 {
		t.Errorf("%d pages, want 2", pages)
	}
}

// fillTokens stores n tokens of org (none revoked unless revoked > 0: then
// the first `revoked` are) in a few big transactions, bypassing the API to
// keep benchmark and test setup fast. The records and indexes are the same
// as CreateToken's (and RevokeToken's); the creation events and every
// audit record are left out, and the revision counter moves as if they
// were written.
func fillTokens(s *Bolt, org string, n, revoked int) error {
	const perTx = 20_000
	for done := 0; done < n; {
		err := s.db.Update(func(tx *bolt.Tx) error {
			rev, err := currentRevision(tx)
			if err != nil {
				return err
			}
			w := &writer{kv: boltKV{tx}, start: rev, rev: rev}
			for ; done < n && w.rev-w.start < perTx; done++ {
				x := tok(org, fmt.Sprint("fill-", done), "filler", 30*24*time.Hour)
				createRev := w.next()
				id := []byte(x.ID)
				if err := w.put(bucketTokens, id, encodeToken(&x, createRev)); err != nil {
					return err
				}
				if err := w.put(bucketTokenNames, nameKey(x.OrgID, x.Name), id); err != nil {
					return err
				}
				if err := w.put(bucketTokensByOrg, byOrgKey(x.OrgID, createRev, x.ID), nil); err != nil {
					return err
				}
				if err := w.put(bucketTokensByCreator, byCreatorKey(x.OrgID, x.CreatedBy, createRev, x.ID), nil); err != nil {
					return err
				}
				if done >= revoked {
					if err := w.put(bucketUnrevoked, unrevokedKey(x.OrgID, x.CreatedBy, x.ID), encodeExpiry(x.ExpireTime)); err != nil {
						return err
					}
					continue
				}
				a := auditFor(AuditTokenRevoked, t0)
				if _, err := revokeToken(w, x, createRev, &a); err != nil {
					return err
				}
			}
			// The chain must reach the head (initDigests); skipped events
			// get no link, so the head is as if reseeded.
			if err := w.put(bucketDigests, be(w.rev), chainDigest(nil, w.rev, nil)); err != nil {
				return err
			}
			return tx.Bucket(bucketMeta).Put(metaRevision, be(w.rev))
		})
		if err != nil {
			return err
		}
	}
	return s.db.View(func(tx *bolt.Tx) error {
		rev, err := currentRevision(tx)
		s.rev.Store(rev)
		return err
	})
}
