package store

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigil-auth/sigil/pkg/scope"
)

var (
	retentionYear = flag.Bool("retention-year", false,
		"TestRetentionPlateau: simulate a year (12 months of 30 days) at -retention-year-per-day tokens a day, with a 90-day retention, and print the file size per month")
	retentionPerDay = flag.Int("retention-year-per-day", 1000, "tokens minted per simulated day with -retention-year")
	retentionNoSync = flag.Bool("retention-year-no-freelist-sync", false,
		"with -retention-year: stop writing bbolt's freelist at each commit once the file is open (bbolt's NoFreelistSync), to compare")
)

// simParams shapes a simulated deployment.
type simParams struct {
	perDay    int           // tokens minted a day
	months    int           // of 30 days
	retention Retention     // what the job applies every day
	rotate    time.Duration // signing key rotation period
}

// simMonth is the state of the file at the end of a simulated month.
type simMonth struct {
	used    int64 // bytes up to bbolt's high-water page
	file    int64 // file size
	free    int   // free pages
	tokens  int   // token records
	audit   int   // audit records
	keys    int
	digests int
}

// simulate runs a deployment on s with an injected clock, a day at a time:
// every day it mints p.perDay tokens (lifetimes 7 to 30 days, one in ten
// minted through a live token and expiring with it at the latest), revokes
// one live token in twenty (cascading), rotates the signing key every
// p.rotate (the old one becomes verify-only), then runs Compact and the
// retention as the authority does. It returns the file's state at the end
// of each month.
func simulate(t *testing.T, s *Bolt, p simParams) []simMonth {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	type live struct {
		id     string
		org    string
		expire time.Time
	}
	var (
		alive  []live
		seq    int
		keyID  = testKeyID
		keyNo  = 1
		months []simMonth
	)
	start := t0
	lastRotate := start
	for d := 1; d <= p.months*30; d++ {
		now := start.Add(time.Duration(d) * 24 * time.Hour)
		// Forget what has expired.
		kept := alive[:0]
		for _, x := range alive {
			if now.Before(x.expire) {
				kept = append(kept, x)
			}
		}
		alive = kept
		if p.rotate > 0 && now.Sub(lastRotate) >= p.rotate {
			keyNo++
			next := fmt.Sprintf("k%d", keyNo)
			if _, err := s.AddKey(ctx, Key{ID: next, State: KeyActive, Public: make([]byte, 32), SealedPrivate: []byte("sealed"), CreateTime: now, ActivateTime: now},
				AuditRecord{Time: now, Actor: ActorSystem, Action: AuditKeyRotated}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.SetKeyState(ctx, keyID, KeyVerifyOnly); err != nil {
				t.Fatal(err)
			}
			keyID, lastRotate = next, now
		}
		batch := make([]Token, 0, p.perDay)
		before := len(alive) // parents come from earlier days: stored already
		for range p.perDay {
			seq++
			org := fmt.Sprintf("org-%d", rng.IntN(20))
			ttl := time.Duration(7*24+rng.IntN(23*24)) * time.Hour
			x := Token{
				ID: fmt.Sprintf("%032x", seq), OrgID: org, Name: fmt.Sprintf("t%d", seq), Description: "simulated",
				Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}, CreatedBy: fmt.Sprintf("user-%d", rng.IntN(50)),
				KeyID: keyID, CreateTime: now, ExpireTime: now.Add(ttl),
			}
			if before > 0 && rng.IntN(10) == 0 {
				parent := alive[rng.IntN(before)]
				x.ParentID, x.OrgID = parent.id, parent.org
				if x.ExpireTime.After(parent.expire) {
					x.ExpireTime = parent.expire
				}
			}
			batch = append(batch, x)
			alive = append(alive, live{id: x.ID, org: x.OrgID, expire: x.ExpireTime})
		}
		if err := createAll(ctx, s, batch, now); err != nil {
			t.Fatalf("day %d: %v", d, err)
		}
		for range p.perDay / 20 {
			i := rng.IntN(len(alive))
			if _, _, _, err := s.RevokeToken(ctx, alive[i].id, AuditRecord{Time: now, Actor: "operator", Action: AuditTokenRevoked, Reason: "simulated"}); err != nil {
				t.Fatalf("day %d: %v", d, err)
			}
			// Its descendants stay in alive until they expire: one chosen
			// as a parent is refused, one revoked again is a no-op.
			alive[i] = alive[len(alive)-1]
			alive = alive[:len(alive)-1]
		}
		if _, err := s.Compact(ctx, now.Add(-10*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApplyRetention(ctx, now, p.retention); err != nil {
			t.Fatalf("day %d: %v", d, err)
		}
		if d%30 == 0 {
			months = append(months, measure(t, s))
		}
	}
	return months
}

// createAll mints the tokens from 8 writers, as concurrent requests do
// (the group committer shares their transactions).
func createAll(ctx context.Context, s *Bolt, batch []Token, now time.Time) error {
	const writers = 8
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(batch); i += writers {
				x := batch[i]
				a := AuditRecord{Time: now, Actor: "operator", Action: AuditTokenCreated}
				_, err := s.CreateToken(ctx, x, a)
				if errors.Is(err, ErrNotActive) {
					// The parent was revoked by a cascade: mint it directly.
					x.ParentID = ""
					_, err = s.CreateToken(ctx, x, a)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// measure reads the file's size and contents.
func measure(t *testing.T, s *Bolt) simMonth {
	var m simMonth
	if err := s.db.View(func(tx *bolt.Tx) error {
		m.used = tx.Size()
		m.tokens = tx.Bucket(bucketTokens).Stats().KeyN
		m.audit = tx.Bucket(bucketAudit).Stats().KeyN
		m.keys = tx.Bucket(bucketKeys).Stats().KeyN
		m.digests = tx.Bucket(bucketDigests).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	m.file = fi.Size()
	m.free = s.db.Stats().FreePageN
	return m
}

// TestRetentionPlateau shows that under steady minting, expiry and
// revocation the bbolt file stops growing once the retention is reached:
// bbolt reuses the pages the purges free. The default run is scaled down
// (60 tokens a day, 30-day retentions, 7 months: the content is steady
// from day 60) and asserts that the used size at months 6 and 7 is within
// 10% of month 4's. With -retention-year it runs a year at
// -retention-year-per-day tokens a day with the default 90-day token
// retention (audit kept 90 days too, then forever) and prints the table
// BENCHMARKS.md shows.
func TestRetentionPlateau(t *testing.T) {
	if *retentionYear {
		for _, audit := range []time.Duration{90 * 24 * time.Hour, 0} {
			t.Run(fmt.Sprintf("audit-%s", auditName(audit)), func(t *testing.T) {
				s := openTest(t)
				s.db.NoSync = true // page allocation is the same; fsyncs would only slow the run
				s.db.NoFreelistSync = *retentionNoSync
				months := simulate(t, s, simParams{perDay: *retentionPerDay, months: 12, rotate: 30 * 24 * time.Hour,
					retention: Retention{Tokens: 90 * 24 * time.Hour, Audit: audit}})
				printMonths(months)
			})
		}
		return
	}
	s := openTest(t)
	s.db.NoSync = true
	months := simulate(t, s, simParams{perDay: 60, months: 7, rotate: 30 * 24 * time.Hour,
		retention: Retention{Tokens: 30 * 24 * time.Hour, Audit: 30 * 24 * time.Hour}})
	for i, m := range months {
		t.Logf("month %d: used %d B, file %d B, %d tokens, %d audit records, %d keys, %d digests", i+1, m.used, m.file, m.tokens, m.audit, m.keys, m.digests)
	}
	base := months[3]
	for _, i := range []int{5, 6} {
		if m := months[i]; float64(m.used) > 1.1*float64(base.used) {
			t.Errorf("month %d uses %d B, more than 1.1 × month 4's %d B: the file keeps growing", i+1, m.used, base.used)
		}
	}
	// The content itself is bounded: tokens, audit records, keys and
	// digests do not pile up.
	if m := months[6]; float64(m.tokens) > 1.2*float64(base.tokens) || float64(m.audit) > 1.2*float64(base.audit) ||
		m.keys > base.keys+1 || float64(m.digests) > 1.2*float64(base.digests) {
		t.Errorf("content grows: month 4 %+v, month 7 %+v", base, m)
	}
	if m := months[6]; m.tokens >= 7*30*60 {
		t.Errorf("nothing was purged: %d tokens", m.tokens)
	}
}

func auditName(d time.Duration) string {
	if d == 0 {
		return "forever"
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// printMonths prints the table of BENCHMARKS.md.
func printMonths(months []simMonth) {
	fmt.Println("| month | used (MiB) | file (MiB) | free pages | tokens | audit records | keys | digests |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for i, m := range months {
		fmt.Printf("| %d | %.1f | %.1f | %d | %d | %d | %d | %d |\n", i+1, float64(m.used)/(1<<20), float64(m.file)/(1<<20), m.free, m.tokens, m.audit, m.keys, m.digests)
	}
}
