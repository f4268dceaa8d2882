package main

// The restore scenario end to end: a backup of the authority's file, more
// mints and revocations (an authorizer applies them), the authorizer cut
// off, the backup restored and the authority restarted on it at the same
// address, revocations made on the restored store, then the authorizer back.
// It must never resume across the history it did not see: every token whose
// revocation the restored authority acknowledged is denied, with and
// without min_revision, in both interleavings (back before the restored
// revision passes the one it applied, and after).

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-auth/sigil/internal/faultproxy"
	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// dbFile is the store file's name in the authority's data directory.
const dbFile = "sigil.db"

// startProxy puts a fault proxy in front of target; Cut cuts the
// authorizer off (closes every connection and resets new ones, so nothing
// of the old stream is left in its socket buffers), Resume lets it back.
func startProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// copyFile copies src to dst and syncs it.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func startAuthorizerVia(t *testing.T, a *authority, authorityAddr string) *authorizer {
	t.Helper()
	args := []string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--authority", authorityAddr,
		"--authority-token-file", filepath.Join(a.dataDir, "watch.token"), "--max-staleness", "2s", "--shutdown-timeout", "5s"}
	p := start(t, "authorizer", authorizerPkg, args...)
	z := &authorizer{proc: p, client: sigilv1.NewAuthorizerServiceClient(p.conn), health: healthpb.NewHealthClient(p.conn)}
	z.waitServing(t, true, 10*time.Second)
	return z
}

// revokedAfterRestore is a token revoked on the restored authority, with
// the revision the revocation was acknowledged at.
type revokedAfterRestore struct {
	tok string
	rev uint64
}

// neverAllowed checks every token, with and without min_revision, until
// each is denied as REVOKED both ways at a revision at least its own, and
// fails at the first allow. Errors (UNAVAILABLE while the authorizer is
// stale or syncing) are answers that allow nothing. limit only guards
// against a revocation that never arrives.
func neverAllowed(t *testing.T, z *authorizer, toks []revokedAfterRestore, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	done := make([][2]bool, len(toks))
	allDone := func() bool {
		for _, d := range done {
			if !d[0] || !d[1] {
				return false
			}
		}
		return true
	}
	checks := 0
	for !allDone() {
		if time.Now().After(deadline) {
			t.Fatalf("revocations made after the restore not all seen within %s (%v)", limit, done)
		}
		for i, r := range toks {
			for j, min := range []uint64{0, r.rev} {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				resp, err := z.client.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{
					Token: r.tok, Permission: "domain:view", Resource: "domains/example.com", OrgId: "org-a", MinRevision: min,
				})
				cancel()
				checks++
				if err != nil {
					continue
				}
				if resp.GetAllowed() {
					t.Fatalf("token %d (revoked at %d after the restore) allowed at revision %d (min_revision %d) after %d checks", i, r.rev, resp.GetRevision(), min, checks)
				}
				if resp.GetReason() == sigilv1.DenyReason_DENY_REASON_REVOKED && resp.GetRevision() >= r.rev {
					done[i][j] = true
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	// And they stay denied.
	for range 20 {
		for _, r := range toks {
			wantDecision(t, z, r.tok, 0, sigilv1.DenyReason_DENY_REASON_REVOKED)
			wantDecision(t, z, r.tok, r.rev, sigilv1.DenyReason_DENY_REASON_REVOKED)
		}
	}
}

func TestE2ERestore(t *testing.T) {
	for _, tc := range []struct {
		name string
		// pass: the restored authority's revision passes the one the
		// authorizer applied before it comes back.
		pass bool
	}{
		{"authorizer back before the restored revision passes its own", false},
		{"authorizer back after the restored revision passed its own", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			addr := testproc.FreeAddr(t)
			a := startAuthority(t, dataDir, addr)
			proxy := startProxy(t, addr)
			z := startAuthorizerVia(t, a, proxy.Addr())

			// Before the backup.
			tokA, idA := a.mint(t)
			tokB, idB := a.mint(t)
			tokLive, _ := a.mint(t)
			wantDecision(t, z, tokLive, 0, allowed)
			// Token issue times are whole seconds and a cut voids the
			// cut's own second: leave it before recording the backup time.
			time.Sleep(1100 * time.Millisecond)
			backupTime := time.Now()
			backup := filepath.Join(t.TempDir(), "backup.db")
			copyFile(t, filepath.Join(dataDir, dbFile), backup)

			// After the backup, applied by the authorizer.
			tokPost, _ := a.mint(t)
			var n uint64
			for range 4 {
				_, id := a.mint(t)
				n = a.revoke(t, id)
			}
			wantDecision(t, z, tokPost, n, allowed)

			// Cut off, then restore and restart at the same address.
			proxy.Cut()
			z.waitServing(t, false, 10*time.Second)
			a.term(t, 10*time.Second)
			copyFile(t, backup, filepath.Join(dataDir, dbFile))
			// The backup is below the acknowledged revision: the runbook
			// starts it once with --restored.
			a = startAuthority(t, dataDir, addr, "--restored")

			var revoked []revokedAfterRestore
			r := a.revoke(t, idA)
			revoked = append(revoked, revokedAfterRestore{tokA, r})
			if tc.pass {
				for r <= n+2 {
					_, id := a.mint(t)
					r = a.revoke(t, id)
				}
				r = a.revoke(t, idB)
				revoked = append(revoked, revokedAfterRestore{tokB, r})
				if r <= n {
					t.Fatalf("restored revision %d has not passed %d", r, n)
				}
			} else if r >= n {
				t.Fatalf("restored revision %d already at %d; the case needs it below", r, n)
			}

			proxy.Resume()
			neverAllowed(t, z, revoked, 20*time.Second)
			wantDecision(t, z, tokLive, 0, allowed)
			if !tc.pass {
				wantDecision(t, z, tokB, 0, allowed) // not revoked in the restored history
			}

			// The rest of the restore procedure (docs/operations.md): cut
			// every key at the backup time, so the tokens minted after it
			// (unknown to the restored store) stop working and older ones
			// keep working.
			rev := cutAllKeys(t, a, backupTime)
			wantDecision(t, z, tokPost, rev, sigilv1.DenyReason_DENY_REASON_KEY_REVOKED)
			wantDecision(t, z, tokLive, rev, allowed)
		})
	}
}

// cutAllKeys runs RevokeSigningKey with issued_after on every key that is
// not revoked and returns the last revision.
func cutAllKeys(t *testing.T, a *authority, issuedAfter time.Time) uint64 {
	t.Helper()
	ks, err := a.client.ListSigningKeys(a.op(t), &sigilv1.ListSigningKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var rev uint64
	for _, k := range ks.GetKeys() {
		if k.GetState() == sigilv1.SigningKeyState_SIGNING_KEY_STATE_REVOKED {
			continue
		}
		resp, err := a.client.RevokeSigningKey(a.op(t), &sigilv1.RevokeSigningKeyRequest{KeyId: k.GetKeyId(), IssuedAfter: timestamppb.New(issuedAfter)})
		if err != nil {
			t.Fatalf("RevokeSigningKey issued_after: %v", err)
		}
		rev = max(rev, resp.GetRevision())
	}
	if rev == 0 {
		t.Fatal("no key to cut")
	}
	return rev
}

// BenchmarkMinRevisionLatency measures what min_revision costs now that it
// waits for a history probe sent after the check began (one round trip to
// the authority, shared by concurrent checks): a check with min_revision
// already applied against the same check without it, alternating, one
// caller, real binaries over loopback. The reported figures are the
// latency percentiles of each kind and the difference of their medians.
func BenchmarkMinRevisionLatency(b *testing.B) {
	a := startAuthority(b, b.TempDir(), "127.0.0.1:0")
	z := startAuthorizer(b, a)
	tok, _ := a.mint(b)
	_, id := a.mint(b)
	rev := a.revoke(b, id)
	wantDecision(b, z, tok, rev, allowed) // applied and confirmed once
	var plain, waited []time.Duration
	for b.Loop() {
		for _, minRev := range []uint64{0, rev} {
			start := time.Now()
			resp, err := z.check(tok, minRev)
			d := time.Since(start)
			if err != nil || !resp.GetAllowed() {
				b.Fatalf("check (min_revision %d): %v %v", minRev, resp, err)
			}
			if minRev == 0 {
				plain = append(plain, d)
			} else {
				waited = append(waited, d)
			}
		}
	}
	q := func(lat []time.Duration, p float64) float64 {
		slices.Sort(lat)
		return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Microsecond)
	}
	b.ReportMetric(q(plain, .5), "plain-p50-µs")
	b.ReportMetric(q(plain, .99), "plain-p99-µs")
	b.ReportMetric(q(waited, .5), "minrev-p50-µs")
	b.ReportMetric(q(waited, .99), "minrev-p99-µs")
	b.ReportMetric(q(waited, .5)-q(plain, .5), "added-p50-µs")
}
