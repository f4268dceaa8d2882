package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestConcurrentMutations runs 50 goroutines that create, revoke, rotate
// and bulk-revoke at once, some racing for the same names, then checks that
// every acknowledged write is in the file, that no two acknowledged
// mutations share a revision, and that the revision log has no gap.
func TestConcurrentMutations(t *testing.T) {
	for _, mode := range []struct {
		name string
		mode commitMode
	}{{"group", commitGroup}, {"batch", commitBatch}, {"update", commitUpdate}} {
		t.Run(mode.name, func(t *testing.T) {
			ctx := context.Background()
			s := openTest(t)
			setMode(s, mode.mode)
			const workers, rounds = 50, 6

			type ack struct {
				op   string
				id   string
				rev  uint64
				revs int // revisions the mutation took
			}
			var (
				mu   sync.Mutex
				acks []ack
			)
			record := func(a ack) {
				mu.Lock()
				acks = append(acks, a)
				mu.Unlock()
			}
			var wg sync.WaitGroup
			errs := make(chan error, workers*rounds*4)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					creator := fmt.Sprint("user", w%7)
					for r := range rounds {
						x := tok("o", fmt.Sprintf("w%d-r%d", w, r), creator, time.Hour)
						rev, err := s.CreateToken(ctx, x, auditFor(AuditTokenCreated, t0))
						if err != nil {
							errs <- fmt.Errorf("create: %w", err)
							continue
						}
						record(ack{"create", x.ID, rev, 1})

						// Names shared by all workers: only one live holder at a time.
						shared := tok("o", fmt.Sprint("shared", r), creator, time.Hour)
						switch rev, err := s.CreateToken(ctx, shared, auditFor(AuditTokenCreated, t0)); {
						case err == nil:
							record(ack{"create", shared.ID, rev, 1})
						case !errors.Is(err, ErrNameTaken):
							errs <- fmt.Errorf("create shared: %w", err)
						}

						switch r % 3 {
						case 0:
							a := auditFor(AuditTokenRevoked, t0)
							a.Reason = "single"
							got, rev, _, err := s.RevokeToken(ctx, x.ID, a)
							if err != nil {
								errs <- fmt.Errorf("revoke: %w", err)
							} else if got.RevokeReason == "single" { // not revoked first by a bulk revocation
								record(ack{"revoke", x.ID, rev, 1})
							}
						case 1:
							next := tok("o", x.Name, creator, 2*time.Hour)
							switch rev, _, err := s.RotateToken(ctx, x.ID, next, auditFor(AuditTokenRotated, t0)); {
							case err == nil:
								record(ack{"rotate", next.ID + "/" + x.ID, rev, 2})
							case !errors.Is(err, ErrNotActive): // a bulk revocation may have been first
								errs <- fmt.Errorf("rotate: %w", err)
							}
						case 2:
							if w%10 == 0 {
								n, rev, err := s.RevokeTokens(ctx, "o", creator, auditFor(AuditTokensRevoked, t0))
								if err != nil {
									errs <- fmt.Errorf("bulk: %w", err)
								} else if n > 0 {
									record(ack{"bulk", creator, rev, int(n)})
								}
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}

			final := s.Revision()
			owner := map[uint64]string{} // revision → mutation that took it
			total := 0
			for _, a := range acks {
				if a.rev > final {
					t.Errorf("%s %s acknowledged at %d > final %d", a.op, a.id, a.rev, final)
				}
				for r := a.rev - uint64(a.revs) + 1; r <= a.rev; r++ {
					if prev, ok := owner[r]; ok {
						t.Fatalf("revision %d taken by %s and %s %s", r, prev, a.op, a.id)
					}
					owner[r] = a.op + " " + a.id
				}
				total += a.revs
				switch a.op {
				case "create":
					if _, err := s.GetToken(ctx, a.id); err != nil {
						t.Errorf("acknowledged token %s: %v", a.id, err)
					}
				case "revoke":
					got, err := s.GetToken(ctx, a.id)
					if err != nil || got.RevokeRev != a.rev {
						t.Errorf("acknowledged revocation of %s at %d: token %+v, %v", a.id, a.rev, got, err)
					}
				}
			}
			// Every revision but openTest's key belongs to one acknowledged mutation.
			if total != int(final)-1 {
				t.Errorf("acknowledged mutations took %d revisions; the store is at %d", total, final)
			}
			if got := storedRevisions(t, s); len(got) != int(final) || got[len(got)-1] != final {
				t.Errorf("%d events for %d revisions", len(got), final)
			}
			// At most one live holder per name.
			live := map[string]string{}
			page := ""
			for {
				toks, next, err := s.ListTokens(ctx, ListFilter{OrgID: "o", State: StateActive, Now: t0, PageSize: MaxPageSize, PageToken: page})
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range toks {
					if other, ok := live[x.Name]; ok {
						t.Errorf("name %q held by live tokens %s and %s", x.Name, other, x.ID)
					}
					live[x.Name] = x.ID
				}
				if page = next; page == "" {
					break
				}
			}
		})
	}
}

// TestBatchRetryIsIdempotent mixes, in the same batches, creations that
// succeed and creations that fail with an error that rolls the batch back
// (not a rejection), so that bbolt runs the successful functions again:
// each must still be written exactly once.
func TestBatchRetryIsIdempotent(t *testing.T) {
	for _, mode := range []struct {
		name string
		mode commitMode
	}{{"group", commitGroup}, {"batch", commitBatch}} {
		t.Run(mode.name, func(t *testing.T) { testBatchRetry(t, mode.mode) })
	}
}

func testBatchRetry(t *testing.T, mode commitMode) {
	ctx := context.Background()
	s := openTest(t)
	setMode(s, mode)
	bad := tok("o", "bad", "u", time.Hour)
	mustCreate(t, s, bad)
	var saved []byte
	corrupt := func(v []byte) {
		if err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketTokens)
			if saved == nil {
				saved = append([]byte(nil), b.Get([]byte(bad.ID))...)
			}
			return b.Put([]byte(bad.ID), v)
		}); err != nil {
			t.Fatal(err)
		}
	}
	corrupt([]byte{recordV1})
	t.Cleanup(func() { corrupt(saved) }) // before openTest's check runs

	// A long delay puts all the calls in one or two db.Batch batches; the
	// group committer groups what queues behind each commit.
	s.db.MaxBatchDelay = 100 * time.Millisecond
	before, runsBefore := s.Revision(), s.txRuns.Load()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var revs []uint64
	start := make(chan struct{})
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			name := fmt.Sprint("ok", i)
			if i%4 == 0 {
				name = "bad" // the holder's record cannot be read: ErrCorrupt
			}
			rev, err := s.CreateToken(ctx, tok("o", name, "u", time.Hour), auditFor(AuditTokenCreated, t0))
			switch {
			case name == "bad" && !errors.Is(err, ErrCorrupt):
				t.Errorf("create %q: %v, want ErrCorrupt", name, err)
			case name != "bad" && err != nil:
				t.Errorf("create %q: %v", name, err)
			case err == nil:
				mu.Lock()
				revs = append(revs, rev)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if runs := s.txRuns.Load() - runsBefore; runs <= 40 {
		t.Errorf("%d runs for 40 calls: no batch was retried, the test proves nothing", runs)
	} else {
		t.Logf("%d runs for 40 calls", runs)
	}
	if got := s.Revision() - before; got != 30 || len(revs) != 30 {
		t.Fatalf("30 creations took %d revisions (%d acknowledged)", got, len(revs))
	}
	seen := map[uint64]bool{}
	for _, r := range revs {
		if seen[r] || r <= before {
			t.Errorf("revision %d repeated or old", r)
		}
		seen[r] = true
	}
	recs, err := listAuditAfter(ctx, s, "o", before, 100)
	if err != nil || len(recs) != 30 {
		t.Errorf("%d audit records, %v; want 30", len(recs), err)
	}
}

// TestGroupCommitterIsolatesFailures commits, in the same groups, functions
// that write, fail and panic: each caller gets its own answer and the
// writes of the others commit.
func TestGroupCommitterIsolatesFailures(t *testing.T) {
	s := openTest(t)
	errBoom := errors.New("boom")
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]error, 60)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = s.group.update(func(tx *bolt.Tx) error {
				if err := tx.Bucket(bucketMeta).Put([]byte(fmt.Sprint("test-", i)), []byte{1}); err != nil {
					return err
				}
				switch i % 3 {
				case 1:
					return errBoom
				case 2:
					panic("bad function")
				}
				return nil
			})
		}()
	}
	close(start)
	wg.Wait()
	err := s.db.View(func(tx *bolt.Tx) error {
		for i, err := range results {
			written := tx.Bucket(bucketMeta).Get([]byte(fmt.Sprint("test-", i))) != nil
			switch i % 3 {
			case 0:
				if err != nil || !written {
					t.Errorf("call %d: %v, written %v", i, err, written)
				}
			case 1:
				if !errors.Is(err, errBoom) || written {
					t.Errorf("call %d: %v, written %v; want boom and no write", i, err, written)
				}
			case 2:
				if err == nil || written {
					t.Errorf("call %d: %v, written %v; want the panic as an error and no write", i, err, written)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		for i := range results {
			if err := tx.Bucket(bucketMeta).Delete([]byte(fmt.Sprint("test-", i))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
