package offline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/app"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// churn makes a file with many free pages: n tokens minted and revoked,
// then the event log compacted once they expired (their events, digests
// and revoked entries deleted), a key event last so that the floor rises
// past them. It returns the data directory and the ids.
func churn(t *testing.T, n int) (dir string, ids []string) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	s, err := store.Open(filepath.Join(dir, app.DBFile), store.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AddKey(ctx, key("k1", store.KeyActive, t0.Add(-time.Hour)), audit(store.AuditKeyRotated, "")); err != nil {
		t.Fatal(err)
	}
	ids = make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 { // concurrent writers share commits (group commit)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				tk := tokenOf(orgs[i%len(orgs)], fmt.Sprintf("churn-%d", i), creators[i%len(creators)], "k1", time.Minute)
				ids[i] = tk.ID
				if _, err := s.CreateToken(ctx, tk, audit(store.AuditTokenCreated, tk.OrgID)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	for _, org := range orgs {
		if _, _, err := s.RevokeTokens(ctx, org, "", audit(store.AuditTokensRevoked, org)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AddKey(ctx, key("k2", store.KeyActive, t0), audit(store.AuditKeyRotated, "")); err != nil {
		t.Fatal(err)
	}
	if floor, err := s.Compact(ctx, later); err != nil || floor != s.Revision() {
		t.Fatalf("Compact: floor %d, %v; want the last revision %d", floor, err, s.Revision())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, ids
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestCompactShrinks compacts a churned file: it shrinks, the old file is
// kept as sigil.db.bak byte for byte, and the store on the new file answers
// every read as the old one did, at the same epoch, revision and history
// digest. A second run refuses while the .bak exists.
func TestCompactShrinks(t *testing.T) {
	dir, ids := churn(t, 3000)
	path := filepath.Join(dir, app.DBFile)
	before := size(t, path)
	sumBefore := fileSum(t, path)
	code, out, errOut := compact("--data-dir", dir)
	if code != 0 {
		t.Fatalf("compact: exit %d: %s", code, errOut)
	}
	after := size(t, path)
	if after >= before {
		t.Fatalf("compaction did not shrink the file: %d bytes, then %d", before, after)
	}
	t.Logf("%d bytes -> %d bytes", before, after)
	for _, want := range []string{fmt.Sprintf("%d bytes", before), fmt.Sprintf("%d bytes", after), "sigil.db.bak"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if fileSum(t, path+backupSuffix) != sumBefore {
		t.Fatal("sigil.db.bak is not the file as it was")
	}
	if _, err := os.Stat(path + compactSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the compacted copy is left behind: %v", err)
	}
	old, cur := openBolt(t, path+backupSuffix), openBolt(t, path)
	sameChurn(t, old, cur, ids)
	_ = old.Close()
	_ = cur.Close()

	code, _, errOut = compact("--data-dir", dir)
	if code != 1 || !strings.Contains(errOut, path+backupSuffix) {
		t.Fatalf("second compact with the .bak there: exit %d: %s; want 1 naming the .bak", code, errOut)
	}
}

// sameChurn compares what churn's stores hold: epoch, revision, digest,
// every token, the listings, the audit log and the snapshot.
func sameChurn(t *testing.T, a, b store.Store, ids []string) {
	t.Helper()
	ctx := context.Background()
	if a.Epoch() != b.Epoch() || a.Revision() != b.Revision() {
		t.Fatalf("epoch/revision %s/%d and %s/%d", a.Epoch(), a.Revision(), b.Epoch(), b.Revision())
	}
	da, errA := a.DigestAt(ctx, a.Revision())
	db, errB := b.DigestAt(ctx, b.Revision())
	if errA != nil || errB != nil || string(da) != string(db) {
		t.Fatalf("DigestAt: %x %v, %x %v", da, errA, db, errB)
	}
	for _, id := range ids {
		x, errX := a.GetToken(ctx, id)
		y, errY := b.GetToken(ctx, id)
		if errX != nil || errY != nil || fmt.Sprint(x) != fmt.Sprint(y) {
			t.Fatalf("GetToken(%s): %v %v, %v %v", id, x, errX, y, errY)
		}
	}
	for _, org := range orgs {
		x, _, errX := a.ListTokens(ctx, store.ListFilter{OrgID: org, PageSize: 1000})
		y, _, errY := b.ListTokens(ctx, store.ListFilter{OrgID: org, PageSize: 1000})
		if errX != nil || errY != nil || len(x) == 0 || fmt.Sprint(x) != fmt.Sprint(y) {
			t.Fatalf("ListTokens(%s): %d %v, %d %v", org, len(x), errX, len(y), errY)
		}
		ax, _, errX := a.ListAudit(ctx, store.AuditFilter{OrgID: org, PageSize: 1000})
		ay, _, errY := b.ListAudit(ctx, store.AuditFilter{OrgID: org, PageSize: 1000})
		if errX != nil || errY != nil || len(ax) == 0 || fmt.Sprint(ax) != fmt.Sprint(ay) {
			t.Fatalf("ListAudit(%s): %d %v, %d %v", org, len(ax), errX, len(ay), errY)
		}
	}
	sa, errA := a.Snapshot(ctx, t0)
	sb, errB := b.Snapshot(ctx, t0)
	if errA != nil || errB != nil || len(sa.Keys) != 2 || fmt.Sprint(sa) != fmt.Sprint(sb) {
		t.Fatalf("Snapshot: %d revoked %v, %d revoked %v", len(sa.Revoked), errA, len(sb.Revoked), errB)
	}
}

// TestCompactRefusesLockedFile: a file an authority holds is refused,
// naming it, and nothing is made next to it.
func TestCompactRefusesLockedFile(t *testing.T) {
	fx := fill(t)
	s := openBolt(t, fx.path) // as a running authority holds it
	sum := fileSum(t, fx.path)
	code, _, errOut := compact("--data-dir", fx.dir, "--lock-timeout", "200ms")
	if code != 1 || !strings.Contains(errOut, fx.path) || !strings.Contains(errOut, "running authority") {
		t.Fatalf("exit %d: %s; want 1 naming %s", code, errOut, fx.path)
	}
	_ = s.Close()
	for _, p := range []string{fx.path + backupSuffix, fx.path + compactSuffix} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists after a refused compaction", p)
		}
	}
	if fileSum(t, fx.path) != sum {
		t.Fatal("a refused compaction changed the file")
	}
}

// TestCompactReplacesLeftover: a copy an interrupted compaction left is
// replaced; a missing file, a symbolic link and bad flags are refused.
func TestCompactReplacesLeftover(t *testing.T) {
	fx := fill(t)
	if err := os.WriteFile(fx.path+compactSuffix, []byte("half a copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := compact("--data-dir", fx.dir); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	sameStores(t, openBolt(t, fx.path+backupSuffix), openBolt(t, fx.path), fx.ids)

	if code, _, errOut := compact("--data-dir", t.TempDir()); code != 1 || !strings.Contains(errOut, "no database file") {
		t.Errorf("missing file: exit %d: %s", code, errOut)
	}
	linked := t.TempDir()
	if err := os.Symlink(fx.path, filepath.Join(linked, app.DBFile)); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := compact("--data-dir", linked); code != 1 || !strings.Contains(errOut, "symbolic link") {
		t.Errorf("symbolic link: exit %d: %s", code, errOut)
	}
	if code, _, errOut := compact("--data-dir", ""); code != 2 || !strings.Contains(errOut, "--data-dir") {
		t.Errorf("empty --data-dir: exit %d: %s", code, errOut)
	}
	if code, _, errOut := compact("--lock-timeout", "-1s"); code != 2 || !strings.Contains(errOut, "--lock-timeout") {
		t.Errorf("negative --lock-timeout: exit %d: %s", code, errOut)
	}
}
