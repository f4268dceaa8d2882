package scale

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/testproc"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/app"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

var revokedN = flag.Int("scale.revoked", 1_000_000, "revoked, unexpired tokens in TestScaleSnapshot")

// orgSize is how many tokens each organization of the fill holds: one
// RevokeTokens call revokes an organization.
const orgSize = 1000

// fill stores n tokens through the store API (CreateToken, then
// RevokeTokens per organization), many callers at once so that the group
// committer puts up to a thousand mutations in each transaction and fsync,
// and compacts the log (the token-created events) as the authority would.
// Ids are sequential so that bbolt appends rather than splits pages.
func fill(t testing.TB, path string, n int) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keys, err := st.ListKeys(ctx)
	if err != nil || len(keys) == 0 {
		t.Fatalf("ListKeys: %d keys, %v", len(keys), err)
	}
	keyID := keys[0].ID
	now := time.Now()
	grants := []scope.Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/example.com"}}}
	const workers = 256
	run := func(jobs int, job func(i int) error) {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		next := make(chan int)
		for range workers {
			wg.Go(func() {
				for i := range next {
					if err := job(i); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	feed:
		for i := range jobs {
			select {
			case next <- i:
			case err := <-errs:
				errs <- err
				break feed
			}
		}
		close(next)
		wg.Wait()
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
	}
	began := time.Now()
	run(n, func(i int) error {
		org := fmt.Sprintf("org-%05d", i/orgSize)
		tk := store.Token{
			ID: fmt.Sprintf("%032x", i+1), OrgID: org, Name: fmt.Sprintf("t-%d", i), Grants: grants,
			CreatedBy: "filler", KeyID: keyID, CreateTime: now, ExpireTime: now.Add(30 * 24 * time.Hour),
		}
		_, err := st.CreateToken(ctx, tk, store.AuditRecord{Time: now, Actor: "operator", OrgID: org, Action: store.AuditTokenCreated, Reason: "scale"})
		return err
	})
	created := time.Since(began)
	orgs := (n + orgSize - 1) / orgSize
	run(orgs, func(i int) error {
		org := fmt.Sprintf("org-%05d", i)
		_, _, err := st.RevokeTokens(ctx, org, "", store.AuditRecord{Time: now, Actor: "operator", OrgID: org, Action: store.AuditTokensRevoked, Reason: "scale"})
		return err
	})
	revoked := time.Since(began) - created
	if _, err := st.Compact(ctx, now); err != nil {
		t.Fatal(err)
	}
	snap, err := st.Snapshot(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Revoked) != n {
		t.Fatalf("store holds %d revoked tokens, want %d", len(snap.Revoked), n)
	}
	t.Logf("fill: %d tokens created in %s, revoked in %s, compacted and checked in %s (revision %d)",
		n, created.Round(time.Millisecond), revoked.Round(time.Millisecond), (time.Since(began) - created - revoked).Round(time.Millisecond), snap.Revision)
}

// revokedSetBytes returns the heap the authorizer's revoked set takes for
// n tokens: the same structure (map[token.ID]V, grown entry by entry as the
// follower does, V its expiry: int64 Unix seconds now, time.Time before),
// built here and weighed after a GC.
func revokedSetBytes[V any](n int, exp V) int64 {
	var before, after runtime.MemStats
	// Twice: objects with finalizers (the test's own connections, files)
	// are freed one cycle after they become unreachable.
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := map[token.ID]V{}
	for i := range n {
		id, err := token.ParseID(fmt.Sprintf("%032x", i+1))
		if err != nil {
			panic(err)
		}
		m[id] = exp
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(m)
	return int64(after.HeapAlloc) - int64(before.HeapAlloc)
}

// phases says when the authorizer z, started at began, logged that it
// listens and that its revocation stream opened, and when it applied the
// snapshot (at applied): where its start-to-SERVING time goes.
func phases(t *testing.T, z *proc, began, applied time.Time) string {
	t.Helper()
	at := func(msg string) string {
		var rec struct {
			Time time.Time `json:"time"`
		}
		if err := z.WaitRecord(10*time.Second, msg, &rec); err != nil {
			t.Fatal(err)
		}
		return rec.Time.Sub(began).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("listening at +%s, stream opened at +%s, snapshot applied at +%s", at("listening"), at("revocation stream opened"), applied.Sub(began).Round(time.Millisecond))
}

// TestScaleSnapshot measures a fresh authorizer loading a snapshot of
// -scale.revoked revoked, unexpired tokens from the real authority: its
// start-to-SERVING time, its RSS per revoked token (against an authorizer
// of an empty authority, same build, same moment), and the authority's
// peak RSS while it serves the snapshot.
//
//	go test -run TestScaleSnapshot -scale -v -timeout 30m ./services/authority/internal/scale
func TestScaleSnapshot(t *testing.T) {
	skipUnlessScale(t)
	n := *revokedN
	logLoad(t)
	defer logLoad(t)

	// Built before any timing starts.
	testproc.MustBuild(t, authorizerPkg)
	setBytes := revokedSetBytes(n, time.Now().Unix())
	oldSetBytes := revokedSetBytes(n, time.Now())

	// An empty authority, for the authorizer's baseline.
	emptyDir := t.TempDir()
	empty := startAuthority(t, emptyDir)

	// The full one: started once to make its keys and credentials, stopped,
	// filled, started again.
	dir := t.TempDir()
	first := startAuthority(t, dir)
	if err := first.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	fill(t, filepath.Join(dir, app.DBFile), n)
	full := startAuthority(t, dir)
	time.Sleep(3 * time.Second) // let the start-up compaction pass
	aRSS0, aHWM0 := memKB(t, full.PID())
	resetHWM(t, full.PID())

	// authorizer starts an authorizer of a and returns its start-to-SERVING
	// time and its VmRSS and VmHWM once SERVING (KiB).
	authorizer := func(a *proc, dataDir string, want int) (time.Duration, int64, int64) {
		began := time.Now()
		z := start(t, "authorizer", authorizerPkg, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
			"--authority", a.addr, "--authority-token-file", filepath.Join(dataDir, "watch.token"), "--shutdown-timeout", "5s")
		waitServing(t, z.conn, 2*time.Minute)
		took := time.Since(began)
		rss, hwm := memKB(t, z.PID())
		var rec struct {
			RevokedTokens int       `json:"revoked_tokens"`
			Time          time.Time `json:"time"`
		}
		if err := z.WaitRecord(10*time.Second, "snapshot applied", &rec); err != nil {
			t.Fatal(err)
		}
		if rec.RevokedTokens != want {
			t.Fatalf("authorizer applied %d revoked tokens, want %d", rec.RevokedTokens, want)
		}
		t.Logf("authorizer of %d revoked tokens: %s", want, phases(t, z, began, rec.Time))
		return took, rss, hwm
	}
	baseTook, baseRSS, baseHWM := authorizer(empty, emptyDir, 0)
	took, rss, hwm := authorizer(full, dir, n)
	time.Sleep(time.Second)
	aRSS1, aHWM1 := memKB(t, full.PID())

	t.Logf("authorizer of the empty authority: SERVING after %s, VmRSS %d KiB, VmHWM %d KiB", baseTook.Round(time.Millisecond), baseRSS, baseHWM)
	t.Logf("authorizer of %d revoked tokens: SERVING after %s (target ≤ 2 s), VmRSS %d KiB, VmHWM %d KiB", n, took.Round(time.Millisecond), rss, hwm)
	t.Logf("authorizer RSS per revoked token: %.1f B (VmRSS delta), %.1f B (VmHWM delta); revoked set structure %.1f B/token (target ≤ 100; %.1f B/token with time.Time expiries)",
		float64(rss-baseRSS)*1024/float64(n), float64(hwm-baseHWM)*1024/float64(n), float64(setBytes)/float64(n), float64(oldSetBytes)/float64(n))
	t.Logf("authority: VmRSS %d KiB before the snapshot (VmHWM since start %d KiB), peak while serving it %d KiB (+%d KiB), VmRSS after %d KiB",
		aRSS0, aHWM0, aHWM1, aHWM1-aRSS0, aRSS1)
}
