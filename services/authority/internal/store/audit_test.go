package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestListAudit(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)  // key k1: a deployment-wide record at revision 1
	var want []uint64 // revisions of org "o"'s records
	for i := range 23 {
		x := tok("o", fmt.Sprint("t", i), "u", time.Hour)
		want = append(want, mustCreate(t, s, x))
		mustCreate(t, s, tok("o2", fmt.Sprint("t", i), "u", time.Hour))
		if i%5 == 0 {
			_, rev, err := s.RevokeToken(ctx, x.ID, AuditRecord{Time: t0, Actor: "token:abc", Action: AuditTokenRevoked, Reason: "r"})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, rev)
		}
	}
	n, rev, err := s.RevokeTokens(ctx, "o", "", auditFor(AuditTokensRevoked, t0))
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, rev)

	for _, tc := range []struct {
		name  string
		limit int
	}{{"page of 1", 1}, {"page of 7", 7}, {"default page", 0}, {"large page", 5000}} {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint64
			after := uint64(0)
			for {
				recs, err := s.ListAudit(ctx, "o", after, tc.limit)
				if err != nil {
					t.Fatal(err)
				}
				if max := pageSize(tc.limit); len(recs) > max {
					t.Fatalf("%d records for limit %d", len(recs), tc.limit)
				}
				for _, r := range recs {
					if r.OrgID != "o" {
						t.Fatalf("record of organization %q", r.OrgID)
					}
					got = append(got, r.Revision)
				}
				if len(recs) < pageSize(tc.limit) {
					break
				}
				after = recs[len(recs)-1].Revision
			}
			if !slices.Equal(got, want) {
				t.Errorf("revisions\n%v\nwant\n%v", got, want)
			}
		})
	}

	recs, err := s.ListAudit(ctx, "o", rev-1, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("= %+v, %v", recs, err)
	}
	if r := recs[0]; r.Action != AuditTokensRevoked || r.Count != n || r.Actor != "operator" || r.Reason != "test" || !r.Time.Equal(t0) {
		t.Errorf("bulk record %+v", r)
	}
	recs, _ = s.ListAudit(ctx, "o", 0, 1)
	if r := recs[0]; r.Action != AuditTokenCreated || r.Name != "t0" || len(r.Grants) != 2 || r.TokenID == "" {
		t.Errorf("first record %+v", r)
	}
	for _, tc := range []struct {
		org  string
		want int
	}{{"", 1}, {"o2", 23}, {"nobody", 0}, {"o\x00", 0}} {
		recs, err := s.ListAudit(ctx, tc.org, 0, 1000)
		if err != nil || len(recs) != tc.want {
			t.Errorf("ListAudit(%q) = %d records, %v; want %d", tc.org, len(recs), err, tc.want)
		}
	}
	if recs, err := s.ListAudit(ctx, "o", ^uint64(0), 10); err != nil || len(recs) != 0 {
		t.Errorf("after max = %v, %v", recs, err)
	}
}
