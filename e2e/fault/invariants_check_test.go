package fault

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// The checkers must be able to fail: each is given a history with one
// violation made up for it (and its near misses, which must pass).

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func allowedCheck(tok int, start time.Duration, minRev, rev uint64) checkRec {
	return checkRec{Token: tok, Start: at(start), End: at(start + time.Millisecond), MinRev: minRev, Code: codes.OK, Allowed: true, Revision: rev}
}

func wantViolations(t *testing.T, got []string, n int, mention string) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d violations %q, want %d", len(got), got, n)
	}
	for _, v := range got {
		if !strings.Contains(v, mention) {
			t.Fatalf("violation %q does not mention %q", v, mention)
		}
	}
}

func TestCheckMinRevisionCatchesAllowAfterAcknowledgedRevocation(t *testing.T) {
	revokes := []revokeRec{{Token: 1, Ack: at(0), Rev: 10}}
	ok := []checkRec{
		allowedCheck(1, -time.Second, 9, 9),  // min_revision below the revocation
		allowedCheck(2, time.Second, 10, 12), // another token
		{Token: 1, Start: at(time.Second), End: at(time.Second), MinRev: 10, Code: codes.OK, Reason: sigilv1.DenyReason_DENY_REASON_REVOKED, Revision: 10},
		{Token: 1, Start: at(time.Second), End: at(time.Second), MinRev: 11, Code: codes.Unavailable},
	}
	wantViolations(t, checkMinRevision(ok, revokes), 0, "")

	bad := append(ok, allowedCheck(1, time.Second, 10, 10))
	wantViolations(t, checkMinRevision(bad, revokes), 1, "token 1 allowed by a check started 12:00:01.000 with min_revision 10")
	// Without min_revision, an allow made at a revision that includes the
	// revocation is just as wrong.
	bad = append(ok, allowedCheck(1, time.Second, 0, 11))
	wantViolations(t, checkMinRevision(bad, revokes), 1, "allowed at revision 11")
}

func TestCheckStalenessBoundCatchesLateAllow(t *testing.T) {
	revokes := []revokeRec{{Token: 1, Ack: at(0), Rev: 10}}
	ok := []checkRec{
		allowedCheck(1, 2900*time.Millisecond, 0, 9), // within 2s + 1s
		allowedCheck(2, 10*time.Second, 0, 9),        // a live token
		{Token: 1, Start: at(5 * time.Second), End: at(5 * time.Second), Code: codes.Unavailable},
	}
	wantViolations(t, checkStalenessBound(ok, revokes, 2*time.Second, time.Second), 0, "")
	bad := append(ok, allowedCheck(1, 3100*time.Millisecond, 0, 9))
	wantViolations(t, checkStalenessBound(bad, revokes, 2*time.Second, time.Second), 1, "token 1 allowed by a check started 12:00:03.100, 3.1s after")
}

func TestCheckUnavailableWhileStaleCatchesAnswer(t *testing.T) {
	windows := []window{{From: at(0), To: at(5 * time.Second), What: "proxy paused"}}
	unavailable := func(start time.Duration) checkRec {
		return checkRec{Token: 1, Start: at(start), End: at(start + time.Millisecond), Code: codes.Unavailable}
	}
	ok := []checkRec{
		allowedCheck(1, 2900*time.Millisecond, 0, 9), // not yet stale beyond the bound and margin
		unavailable(3100 * time.Millisecond),
		unavailable(4900 * time.Millisecond),
		// Began inside, ended after the window: fresh again by then.
		{Token: 1, Start: at(4900 * time.Millisecond), End: at(5100 * time.Millisecond), Code: codes.OK, Allowed: true},
	}
	got, inside := checkUnavailableWhileStale(ok, windows, 2*time.Second, time.Second)
	wantViolations(t, got, 0, "")
	if inside != 2 {
		t.Fatalf("%d checks inside the window, want 2", inside)
	}
	for _, c := range []checkRec{
		allowedCheck(1, 3500*time.Millisecond, 0, 9),
		{Token: 1, Start: at(4 * time.Second), End: at(4 * time.Second), Code: codes.OK, Reason: sigilv1.DenyReason_DENY_REASON_REVOKED},
		{Token: 1, Start: at(4 * time.Second), End: at(4 * time.Second), Code: codes.DeadlineExceeded},
	} {
		got, _ := checkUnavailableWhileStale(append(ok, c), windows, 2*time.Second, time.Second)
		wantViolations(t, got, 1, "into proxy paused, got "+c.Code.String())
	}
}

func TestFirstRevocationsKeepsTheEarliestAcknowledgement(t *testing.T) {
	// An unsure revocation repeated later is acknowledged again with the
	// original revision; the earliest acknowledgement binds.
	got := firstRevocations([]revokeRec{{Token: 1, Ack: at(time.Second), Rev: 10}, {Token: 1, Ack: at(0), Rev: 10}, {Token: 2, Ack: at(0), Rev: 4}})
	if got[1].Ack != at(0) || got[1].Rev != 10 || got[2].Rev != 4 || len(got) != 2 {
		t.Fatalf("firstRevocations = %+v", got)
	}
}

// A revocation a restore took back binds the checks that ended before the
// restored authority came up, and no later one; revision numbers of two
// histories are never compared.
func TestCheckersAcrossARestore(t *testing.T) {
	up := at(10 * time.Second)
	restores := []restoreRec{{Up: up, Settled: at(11500 * time.Millisecond)}}
	revokes := []revokeRec{
		{Token: 1, Ack: at(0), Rev: 10, Until: up},            // taken back
		{Token: 2, Ack: at(12 * time.Second), Rev: 8, Gen: 1}, // new history
	}
	ok := []checkRec{
		allowedCheck(1, 11*time.Second, 10, 10), // after the restore: token 1 is live again
		allowedCheck(2, 5*time.Second, 9, 9),    // old history's revision 9 is not the new one's
		allowedCheck(2, 11*time.Second, 0, 7),   // before its revocation
		allowedCheck(2, 11*time.Second, 0, 20),  // in the restore window: an old-history revision
	}
	wantViolations(t, checkMinRevision(ok, revokes, restores...), 0, "")
	wantViolations(t, checkStalenessBound(ok, revokes, 2*time.Second, time.Second), 0, "")

	bad := append(ok, allowedCheck(1, 5*time.Second, 0, 0)) // before the restore, 5s after the ack
	wantViolations(t, checkStalenessBound(bad, revokes, 2*time.Second, time.Second), 1, "token 1 allowed")
	bad = append(ok, allowedCheck(1, time.Second, 10, 10))
	wantViolations(t, checkMinRevision(bad, revokes, restores...), 1, "token 1 allowed by a check started 12:00:01.000 with min_revision 10")
	// The restore window: a check begun after the new history's revocation,
	// min_revision at it, answered allowed.
	bad = append(ok, allowedCheck(2, 13*time.Second, 8, 20))
	wantViolations(t, checkMinRevision(bad, revokes, restores...), 1, "token 2 allowed by a check started 12:00:13.000 with min_revision 8")
	// Settled: an answer's revision is the new history's.
	bad = append(ok, allowedCheck(2, 13*time.Second, 0, 9))
	wantViolations(t, checkMinRevision(bad, revokes, restores...), 1, "token 2 allowed at revision 9")
}
