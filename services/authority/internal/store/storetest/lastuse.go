package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// testRecordTokenUse: uses are recorded at minute precision for stored
// tokens only, only moving forward, without taking a revision or writing
// an event, and survive a reopen.
func testRecordTokenUse(t *testing.T, cfg Config) {
	ctx := context.Background()
	s := openTest(t, cfg.Open)
	a, b := tok("o", "a", "u", time.Hour), tok("o", "b", "u", time.Hour)
	mustCreate(t, s, a)
	mustCreate(t, s, b)
	rev := s.Revision()
	changed := s.Changed()

	record := func(want int, uses ...store.TokenUse) {
		t.Helper()
		n, err := s.RecordTokenUse(ctx, uses)
		if err != nil {
			t.Fatalf("RecordTokenUse: %v", err)
		}
		if n != want {
			t.Fatalf("RecordTokenUse recorded %d, want %d", n, want)
		}
	}
	lastUse := func(id string) time.Time {
		t.Helper()
		return get(t, s, id).LastUseTime
	}

	if got := lastUse(a.ID); !got.IsZero() {
		t.Fatalf("new token has last use %v", got)
	}
	used := t0.Add(90 * time.Second) // 03:05:35
	record(1, store.TokenUse{TokenID: a.ID, Time: used}, store.TokenUse{TokenID: newID(), Time: used})
	if got, want := lastUse(a.ID), used.Truncate(time.Minute); !got.Equal(want) {
		t.Fatalf("last use %v, want %v (the minute)", got, want)
	}
	if got := lastUse(b.ID); !got.IsZero() {
		t.Fatalf("token b has last use %v without a report", got)
	}
	// Not later: nothing recorded. The same minute is not later either.
	record(0, store.TokenUse{TokenID: a.ID, Time: t0})
	record(0, store.TokenUse{TokenID: a.ID, Time: used.Add(10 * time.Second)})
	if got, want := lastUse(a.ID), used.Truncate(time.Minute); !got.Equal(want) {
		t.Fatalf("last use moved back to %v, want %v", got, want)
	}
	later := used.Add(time.Hour)
	record(2, store.TokenUse{TokenID: a.ID, Time: later}, store.TokenUse{TokenID: b.ID, Time: used})
	if got, want := lastUse(a.ID), later.Truncate(time.Minute); !got.Equal(want) {
		t.Fatalf("last use %v, want %v", got, want)
	}

	if s.Revision() != rev {
		t.Fatalf("recording uses moved the revision from %d to %d", rev, s.Revision())
	}
	select {
	case <-changed:
		t.Fatal("recording uses closed the Changed channel")
	default:
	}
	if evs, err := s.EventsAfter(ctx, rev, 100); err != nil || len(evs) != 0 {
		t.Fatalf("events after recording uses: %v, %v; want none", evs, err)
	}
	// The next mutation takes the next revision: none was used up.
	if next := mustCreate(t, s, tok("o", "c", "u", time.Hour)); next != rev+1 {
		t.Fatalf("next revision %d, want %d", next, rev+1)
	}

	// Too many, or empty ids and times: the caller's bug.
	many := make([]store.TokenUse, store.MaxTokenUses+1)
	for i := range many {
		many[i] = store.TokenUse{TokenID: a.ID, Time: later}
	}
	for name, uses := range map[string][]store.TokenUse{
		"too many":  many,
		"no id":     {{Time: later}},
		"zero time": {{TokenID: a.ID}},
	} {
		if _, err := s.RecordTokenUse(ctx, uses); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}

	if cfg.Reopen != nil {
		s = cfg.Reopen(t, s)
		if got, want := get(t, s, a.ID).LastUseTime, later.Truncate(time.Minute); !got.Equal(want) {
			t.Fatalf("last use after reopen %v, want %v", got, want)
		}
	}
}

// testListTokensUseFilters: UnusedSince and ExpireBefore select the
// tokens they say, alone, together and with the other filters, and
// paging through a filtered listing returns every match once, in order.
func testListTokensUseFilters(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	const n = 40
	var all []store.Token
	var uses []store.TokenUse
	for i := range n {
		x := tok("o", fmt.Sprint("t", i), []string{"alice", "bob"}[i%2], time.Duration(1+i%5)*time.Hour)
		mustCreate(t, s, x)
		all = append(all, x)
		if i%3 != 0 { // every third token never used
			uses = append(uses, store.TokenUse{TokenID: x.ID, Time: t0.Add(time.Duration(i) * time.Minute)})
		}
	}
	mustCreate(t, s, tok("o2", "other", "alice", time.Hour)) // another organization: never listed
	if _, err := s.RecordTokenUse(ctx, uses); err != nil {
		t.Fatal(err)
	}
	stored := map[string]store.Token{}
	for _, x := range all {
		stored[x.ID] = get(t, s, x.ID)
	}
	// Newest first, as the listing goes.
	var newestFirst []string
	for i := len(all) - 1; i >= 0; i-- {
		newestFirst = append(newestFirst, all[i].ID)
	}

	since := t0.Add(20 * time.Minute)
	before := t0.Add(3 * time.Hour)
	for _, tc := range []struct {
		name      string
		createdBy string
		state     store.TokenState
		unused    time.Time
		expire    time.Time
	}{
		{"unused since", "", store.StateAny, since, time.Time{}},
		{"unused since the start", "", store.StateAny, t0, time.Time{}},
		{"expire before", "", store.StateAny, time.Time{}, before},
		{"both", "", store.StateAny, since, before},
		{"both of a creator", "bob", store.StateAny, since, before},
		{"unused since, active", "", store.StateActive, since, time.Time{}},
		{"expire before, none", "", store.StateAny, time.Time{}, t0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []string
			for _, id := range newestFirst {
				x := stored[id]
				if tc.createdBy != "" && x.CreatedBy != tc.createdBy {
					continue
				}
				if tc.state != store.StateAny && x.StateAt(t0) != tc.state {
					continue
				}
				if !tc.unused.IsZero() && !x.LastUseTime.IsZero() && !x.LastUseTime.Before(tc.unused) {
					continue
				}
				if !tc.expire.IsZero() && !x.ExpireTime.Before(tc.expire) {
					continue
				}
				want = append(want, id)
			}
			var got []string
			page := ""
			for pages := 0; ; pages++ {
				if pages > n {
					t.Fatal("paging does not end")
				}
				toks, next, err := s.ListTokens(ctx, store.ListFilter{OrgID: "o", CreatedBy: tc.createdBy, State: tc.state, Now: t0,
					UnusedSince: tc.unused, ExpireBefore: tc.expire, PageSize: 3, PageToken: page})
				if err != nil {
					t.Fatal(err)
				}
				if next != "" && len(toks) != 3 {
					t.Errorf("short page (%d) before the end", len(toks))
				}
				for _, x := range toks {
					if !x.LastUseTime.Equal(stored[x.ID].LastUseTime) {
						t.Errorf("token %s listed with last use %v, GetToken says %v", x.ID, x.LastUseTime, stored[x.ID].LastUseTime)
					}
					got = append(got, x.ID)
				}
				if next == "" {
					break
				}
				page = next
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("listed %d tokens, want %d:\ngot  %v\nwant %v", len(got), len(want), got, want)
			}
		})
	}
}
