package storetest

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

func testListAudit(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open) // key k1: a deployment-wide record at revision 1
	var want []uint64      // revisions of org "o"'s records
	for i := range 23 {
		x := tok("o", fmt.Sprint("t", i), "u", time.Hour)
		want = append(want, mustCreate(t, s, x))
		mustCreate(t, s, tok("o2", fmt.Sprint("t", i), "u", time.Hour))
		if i%5 == 0 {
			_, rev, _, err := s.RevokeToken(ctx, x.ID, store.AuditRecord{Time: t0, Actor: "token:abc", Action: store.AuditTokenRevoked, Reason: "r"})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, rev)
		}
	}
	n, rev, err := s.RevokeTokens(ctx, "o", "", auditFor(store.AuditTokensRevoked, t0))
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
			page := ""
			for {
				recs, next, err := s.ListAudit(ctx, store.AuditFilter{OrgID: "o", PageSize: tc.limit, PageToken: page})
				if err != nil {
					t.Fatal(err)
				}
				if max := pageSize(tc.limit); len(recs) > max || (next != "" && len(recs) != max) {
					t.Fatalf("%d records (next %q) for limit %d", len(recs), next, tc.limit)
				}
				for _, r := range recs {
					if r.OrgID != "o" {
						t.Fatalf("record of organization %q", r.OrgID)
					}
					got = append(got, r.Revision)
				}
				if next == "" {
					break
				}
				page = next
			}
			if !slices.Equal(got, want) {
				t.Errorf("revisions\n%v\nwant\n%v", got, want)
			}
		})
	}

	recs, err := listAuditAfter(ctx, s, "o", rev-1, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("= %+v, %v", recs, err)
	}
	if r := recs[0]; r.Action != store.AuditTokensRevoked || r.Count != n || r.Actor != "operator" || r.Reason != "test" || !r.Time.Equal(t0) {
		t.Errorf("bulk record %+v", r)
	}
	recs, _ = listAuditAfter(ctx, s, "o", 0, 1)
	if r := recs[0]; r.Action != store.AuditTokenCreated || r.Name != "t0" || len(r.Grants) != 2 || r.TokenID == "" {
		t.Errorf("first record %+v", r)
	}
	for _, tc := range []struct {
		org  string
		want int
	}{{"", 1}, {"o2", 23}, {"nobody", 0}, {"o\x00", 0}} {
		recs, err := listAuditAfter(ctx, s, tc.org, 0, store.MaxPageSize)
		if err != nil || len(recs) != tc.want {
			t.Errorf("ListAudit(%q) = %d records, %v; want %d", tc.org, len(recs), err, tc.want)
		}
	}
	if recs, err := listAuditAfter(ctx, s, "o", ^uint64(0), 10); err != nil || len(recs) != 0 {
		t.Errorf("after max = %v, %v", recs, err)
	}
	for _, bad := range []string{"x", auditPageToken("o2", 3), strings.Repeat("A", store.MaxPageTokenLen+1), "a" + auditPageToken("o", 3)} {
		if _, _, err := s.ListAudit(ctx, store.AuditFilter{OrgID: "o", PageToken: bad}); !errors.Is(err, store.ErrBadPageToken) {
			t.Errorf("page token %q: %v, want ErrBadPageToken", bad, err)
		}
	}
}

// listAuditAfter returns one page of up to limit records of org with a
// revision above after.
func listAuditAfter(ctx context.Context, s store.Store, org string, after uint64, limit int) ([]store.AuditRecord, error) {
	page := ""
	if after > 0 {
		page = auditPageToken(org, after)
	}
	recs, _, err := s.ListAudit(ctx, store.AuditFilter{OrgID: org, PageSize: limit, PageToken: page})
	return recs, err
}

// auditPageToken makes a ListAudit page token as the stores do (base64url
// of 'a', the length-prefixed organization and the big-endian revision).
func auditPageToken(org string, rev uint64) string {
	raw := binary.AppendUvarint([]byte{'a'}, uint64(len(org)))
	raw = append(raw, org...)
	raw = binary.BigEndian.AppendUint64(raw, rev)
	return base64.RawURLEncoding.EncodeToString(raw)
}
