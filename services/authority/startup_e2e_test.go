package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// startFails starts the authority on dataDir, requires it to exit non-zero
// before it listens, with every want in its output and no panic text or
// goroutine dump, and returns the output.
func startFails(t *testing.T, dataDir string, want []string, extra ...string) string {
	t.Helper()
	args := append([]string{
		"--listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir", dataDir,
		"--key-activation-delay", "1500ms", "--lock-timeout", "1s",
	}, extra...)
	tp := testproc.StartWith(t, testproc.Options{Name: "authority"}, authorityBin(t), args...)
	select {
	case <-tp.Done():
	case <-time.After(30 * time.Second): // guards a hang only
		tp.Kill()
		t.Fatalf("authority did not exit:\n%s", tp.Logs.String())
	}
	out := tp.Logs.String()
	if tp.Err() == nil {
		t.Fatalf("authority exited 0, want a failed start:\n%s", out)
	}
	if strings.Contains(out, `"msg":"listening"`) {
		t.Fatalf("authority listened before failing:\n%s", out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	for _, bad := range []string{"panic", "goroutine "} {
		if strings.Contains(strings.ToLower(out), bad) {
			t.Errorf("output holds %q:\n%s", bad, out)
		}
	}
	t.Logf("refused: %s", strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]))
	return out
}

// seed starts an authority on a new data directory, mints n tokens and
// stops it cleanly; it returns the data directory and the token ids.
func seed(t *testing.T, n int) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	p := startProc(t, dir)
	var ids []string
	for i := range n {
		r, err := p.client.CreateToken(p.op(), mintReq("acme", fmt.Sprint("seed-", i), "alice"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.GetInfo().GetTokenId())
	}
	p.term(t, 30*time.Second)
	return dir, ids
}

func dbPath(dir string) string { return filepath.Join(dir, "sigil.db") }

func TestStartupTruncatedFile(t *testing.T) {
	dir, _ := seed(t, 300)
	fi, err := os.Stat(dbPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(dbPath(dir), fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	startFails(t, dir, []string{"database file " + dbPath(dir) + " is damaged", "restore from backup"})
}

// leafPages returns the offsets of the leaf pages in use in the bbolt file
// at path, and the page size.
func leafPages(t *testing.T, path string) ([]int64, int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var offs []int64
	err = db.View(func(tx *bolt.Tx) error {
		for id := 2; ; id++ {
			info, err := tx.Page(id)
			if err != nil {
				return err
			}
			if info == nil {
				return nil // beyond the high-water page
			}
			if info.Type == "leaf" {
				offs = append(offs, int64(id)*int64(db.Info().PageSize))
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return offs, db.Info().PageSize
}

func TestStartupDamagedLeafPage(t *testing.T) {
	dir, _ := seed(t, 300)
	offs, pageSize := leafPages(t, dbPath(dir))
	if len(offs) < 3 {
		t.Fatalf("only %d leaf pages: the seed is too small to pick one", len(offs))
	}
	// Random bytes over a leaf page in the middle of the file, header kept
	// (so that the page still claims to be a leaf).
	off := offs[len(offs)/2]
	junk := make([]byte, pageSize-16)
	if _, err := rand.Read(junk); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dbPath(dir), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(junk, off+16); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	startFails(t, dir, []string{"database file " + dbPath(dir) + " is damaged", "restore from backup"})
}

func TestStartupEmptyFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dbPath(dir), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	startFails(t, dir, []string{"database file is empty: " + dbPath(dir), "--init"})
	if _, err := os.Stat(filepath.Join(dir, "kek")); err == nil {
		// Credentials may be made first; the store and its KEK are not.
		t.Fatal("kek file created for a refused store")
	}
	if fi, err := os.Stat(dbPath(dir)); err != nil || fi.Size() != 0 {
		t.Fatalf("refused file changed: %v %v", fi, err)
	}
	p := startProc(t, dir, "--init")
	if _, err := p.client.CreateToken(p.op(), mintReq("acme", "after-init", "alice")); err != nil {
		t.Fatal(err)
	}
	p.term(t, 30*time.Second)
	// Once the store exists, --init changes nothing: the same epoch opens.
	p = startProc(t, dir)
	p.term(t, 30*time.Second)
}

func TestStartupMissingKEKWithKeys(t *testing.T) {
	dir, _ := seed(t, 1)
	kek := filepath.Join(dir, "kek")
	if err := os.Remove(kek); err != nil {
		t.Fatal(err)
	}
	startFails(t, dir, []string{"KEK file missing: " + kek, "restore the file or set SIGIL_AUTHORITY_KEK"})
	if _, err := os.Stat(kek); err == nil {
		t.Fatal("a new kek file was written for a store holding sealed keys")
	}
}

func TestStartupWatchEqualsOperator(t *testing.T) {
	dir := t.TempDir()
	const cred = "sigil_op_same-value-for-both-credentials"
	for _, name := range []string{"operator.token", "watch.token"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(cred+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := startFails(t, dir, []string{"watch credential", "equals the operator credential"})
	if strings.Contains(out, cred) {
		t.Fatal("output holds the credential")
	}
	if _, err := os.Stat(dbPath(dir)); err == nil {
		t.Fatal("store created although start-up was refused")
	}
}

// revokeAll revokes ids and returns the last revision acknowledged.
func revokeAll(t *testing.T, p *proc, ids []string) uint64 {
	t.Helper()
	var rev uint64
	for _, id := range ids {
		r, err := p.client.RevokeToken(p.op(), &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "test"})
		if err != nil {
			t.Fatal(err)
		}
		rev = r.GetRevision()
	}
	return rev
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestStartupRolledBackFile(t *testing.T) {
	dir, ids := seed(t, 5)
	backup := filepath.Join(t.TempDir(), "backup.db")
	copyFile(t, dbPath(dir), backup)

	p := startProc(t, dir)
	acked := revokeAll(t, p, ids)
	p.term(t, 30*time.Second)

	copyFile(t, backup, dbPath(dir))
	startFails(t, dir, []string{fmt.Sprintf("but revision %d was acknowledged", acked), "--restored"})

	p = startProc(t, dir, "--restored")
	if !strings.Contains(p.Logs.String(), "accepted with --restored") {
		t.Errorf("no warning for the accepted rollback:\n%s", p.Logs.String())
	}
	resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `sigil_store_history_rewinds_total{kind="revision"} 1`) {
		t.Errorf("rewind not counted:\n%s", grepLines(string(body), "rewinds"))
	}
	p.term(t, 30*time.Second)
	// The mark moved: a plain start works again.
	p = startProc(t, dir)
	p.term(t, 30*time.Second)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestStartupDamagedNewestMetaPage corrupts the checksum of the newer of
// bbolt's two meta pages: bbolt then opens the older one, one transaction
// back, without a word. The high-water mark must refuse that.
func TestStartupDamagedNewestMetaPage(t *testing.T) {
	dir, ids := seed(t, 3)
	p := startProc(t, dir)
	acked := revokeAll(t, p, ids)
	p.term(t, 30*time.Second)

	f, err := os.OpenFile(dbPath(dir), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Page 0 and page 1 are the meta pages; the page size is in page 0's
	// meta (after the 16-byte page header: magic, version, page size).
	// In a meta: txid at 48, checksum at 56, from the meta's start.
	var hdr [16 + 64]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		t.Fatal(err)
	}
	pageSize := int64(binary.LittleEndian.Uint32(hdr[16+8:]))
	txid := func(page int64) uint64 {
		var b [8]byte
		if _, err := f.ReadAt(b[:], page*pageSize+16+48); err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint64(b[:])
	}
	newest := int64(0)
	if txid(1) > txid(0) {
		newest = 1
	}
	if _, err := f.WriteAt([]byte{0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef}, newest*pageSize+16+56); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	out := startFails(t, dir, []string{fmt.Sprintf("but revision %d was acknowledged", acked), "--restored"})
	if !strings.Contains(out, fmt.Sprintf("the store is at revision %d ", acked-1)) {
		t.Errorf("want the store one revision back:\n%s", out)
	}
}

// TestDamageFoundWhileServing starts on a file with a damaged token page
// and --skip-open-check: the damage is met only when read. The process must
// stay up, turn its health NOT_SERVING and log one ERROR, with no panic
// text or goroutine dump.
func TestDamageFoundWhileServing(t *testing.T) {
	dir, _ := seed(t, 300)
	offs, pageSize := leafPages(t, dbPath(dir))
	f, err := os.OpenFile(dbPath(dir), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Every leaf page holding token records (their grants name
	// domain:view) gets random bytes after its header.
	damaged := 0
	page := make([]byte, pageSize)
	for _, off := range offs {
		if _, err := f.ReadAt(page, off); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(page), "domain:view") {
			continue
		}
		junk := make([]byte, pageSize-16)
		_, _ = rand.Read(junk)
		if _, err := f.WriteAt(junk, off+16); err != nil {
			t.Fatal(err)
		}
		damaged++
	}
	f.Close()
	if damaged == 0 {
		t.Fatal("no token page found")
	}
	p := startProc(t, dir, "--skip-open-check")
	for i := 0; i < 3; i++ { // reads that meet the damage fail, nothing crashes
		_, err := p.client.ListTokens(p.op(), &sigilv1.ListTokensRequest{OrgId: "acme", PageSize: 500})
		if err == nil {
			t.Fatalf("listing damaged token pages succeeded (damaged %d pages)", damaged)
		}
	}
	health := healthpb.NewHealthClient(p.conn)
	r, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health = %v, %v; want NOT_SERVING", r.GetStatus(), err)
	}
	if p.Exited() {
		t.Fatal("authority exited")
	}
	out := p.Logs.String()
	if n := strings.Count(out, `"msg":"database damaged while serving`); n != 1 {
		t.Errorf("%d damage reports, want 1:\n%s", n, out)
	}
	for _, bad := range []string{"panic", "goroutine "} {
		if strings.Contains(strings.ToLower(out), bad) {
			t.Errorf("output holds %q:\n%s", bad, out)
		}
	}
}
