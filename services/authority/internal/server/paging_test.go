package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// seedTokens stores n tokens of org directly in the store (each with its
// audit record), from a few writers so that group commit batches them.
func (e *env) seedTokens(org string, n int) {
	e.t.Helper()
	keyID, _, err := e.km.Signer()
	if err != nil {
		e.t.Fatal(err)
	}
	now := e.clock.now().Truncate(time.Second)
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				t := store.Token{
					ID: fmt.Sprintf("%032x", i+1), OrgID: org, Name: fmt.Sprint("seed-", i), CreatedBy: "alice", KeyID: keyID,
					Grants:     []scope.Grant{{Permissions: []string{"domain:view"}}},
					CreateTime: now, ExpireTime: now.Add(30 * day),
				}
				if _, err := e.st.CreateToken(context.Background(), t, store.AuditRecord{
					Time: now, Actor: "operator", OrgID: org, Action: store.AuditTokenCreated, TokenID: t.ID, Name: t.Name,
				}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
}

// TestPagingAtMaxPageSize pages through more than MaxPageSize tokens and
// audit events at the maximum page size: the first page is full and has a
// next page token, and paging returns every record exactly once.
func TestPagingAtMaxPageSize(t *testing.T) {
	e := newEnv(t, envOpts{})
	const n = store.MaxPageSize + 1
	e.seedTokens("org-1", n)

	t.Run("ListTokens", func(t *testing.T) {
		pages := pageAll(t, func(page string) ([]string, string, error) {
			resp, err := e.client.ListTokens(op(), &sigilv1.ListTokensRequest{OrgId: "org-1", PageSize: store.MaxPageSize, PageToken: page})
			var ids []string
			for _, tk := range resp.GetTokens() {
				ids = append(ids, tk.GetTokenId())
			}
			return ids, resp.GetNextPageToken(), err
		})
		wantEachOnce(t, pages, n)
	})
	t.Run("ListAuditEvents", func(t *testing.T) {
		pages := pageAll(t, func(page string) ([]string, string, error) {
			resp, err := e.client.ListAuditEvents(op(), &sigilv1.ListAuditEventsRequest{OrgId: "org-1", PageSize: store.MaxPageSize, PageToken: page})
			var ids []string
			for _, ev := range resp.GetEvents() {
				ids = append(ids, ev.GetTokenId())
			}
			return ids, resp.GetNextPageToken(), err
		})
		wantEachOnce(t, pages, n)
	})
}

// pageAll calls list from the first page until the next page token is
// empty and returns the pages.
func pageAll(t *testing.T, list func(page string) ([]string, string, error)) [][]string {
	t.Helper()
	var pages [][]string
	page := ""
	for {
		ids, next, err := list(page)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, ids)
		if next == "" {
			return pages
		}
		if len(pages) > 3 {
			t.Fatal("paging does not end")
		}
		page = next
	}
}

// wantEachOnce wants a full first page followed by another, and n distinct
// ids in all.
func wantEachOnce(t *testing.T, pages [][]string, n int) {
	t.Helper()
	if len(pages) < 2 || len(pages[0]) != store.MaxPageSize {
		t.Fatalf("%d pages, first of %d records: want a full first page and a next page token", len(pages), len(pages[0]))
	}
	seen := map[string]bool{}
	for _, p := range pages {
		for _, id := range p {
			if seen[id] {
				t.Fatalf("record %s listed twice", id)
			}
			seen[id] = true
		}
	}
	if len(seen) != n {
		t.Fatalf("listed %d records, want %d", len(seen), n)
	}
}
