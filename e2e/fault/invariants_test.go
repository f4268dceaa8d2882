package fault

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// The history of one scenario: every check, every acknowledged revocation
// and every window in which nothing from the authority could reach the
// authorizer. The invariant checkers below are pure functions of it, so
// that each can be shown to fail on a history made up for the purpose
// (invariants_check_test.go).

// checkRec is one CheckPermission call as the caller saw it.
type checkRec struct {
	Start, End time.Time
	Token      int    // index into history.tokens
	MinRev     uint64 // min_revision sent (0: none)
	Code       codes.Code
	Allowed    bool
	Reason     sigilv1.DenyReason
	Revision   uint64 // the revision the answer was made at (when Code is OK)
}

// revokeRec is one acknowledged revocation: RevokeToken's reply arrived at
// Ack with revision Rev.
type revokeRec struct {
	Token int
	Ack   time.Time
	Rev   uint64
	// Gen is the history the revision number belongs to: 0 until the
	// first restore, n after the n-th (a restored store reuses revision
	// numbers with other events, so numbers of two histories are never
	// compared).
	Gen int
	// Until, when set, is when a restore took the revocation back (it was
	// acknowledged after the backup): it binds only checks that ended
	// before then, and the token counts as live until revoked again.
	Until time.Time
}

// window is a span in which no byte from the authority could reach the
// authorizer (a paused or cut proxy, a stopped or dead authority, ...).
type window struct {
	From, To time.Time
	What     string
}

// tokenRec is a token whose mint was acknowledged.
type tokenRec struct {
	ID, Tok string
	Minted  time.Time
}

// history is safe for concurrent use by the load's goroutines.
type history struct {
	mu       sync.Mutex
	tokens   []tokenRec
	checks   []checkRec
	revokes  []revokeRec
	windows  []window
	unsure   map[int]bool // revocations sent whose reply never came
	maxAcked uint64       // highest acknowledged revocation revision
	// restores are the restores, in order: the starts of histories 1, 2, ...
	restores []restoreRec
	// voided are the tokens a restore's key cut voids (minted after the
	// backup, or in the cut's second): KEY_REVOKED from then on.
	voided map[int]bool
	// reserved are tokens the load's revoker leaves alone.
	reserved map[int]bool
}

func newHistory() *history {
	return &history{unsure: map[int]bool{}, voided: map[int]bool{}, reserved: map[int]bool{}}
}

// restoreRec is one restore: the restored authority came up at Up; from
// Settled on, the authorizer is known to answer from the restored history
// (a min_revision check of it was answered). In between, a check without
// min_revision may be answered from the old history, within the staleness
// bound: its answer's revision is of that history.
type restoreRec struct {
	Up, Settled time.Time
}

// genAt is the history generation at t: how many restores came up by t.
func genAt(restores []restoreRec, t time.Time) int {
	n := 0
	for _, r := range restores {
		if !t.Before(r.Up) {
			n++
		}
	}
	return n
}

// settledFor reports whether a check begun at start is known to be
// answered from history gen (always for the first one).
func settledFor(restores []restoreRec, gen int, start time.Time) bool {
	if gen == 0 || gen > len(restores) {
		return true
	}
	s := restores[gen-1].Settled
	return !s.IsZero() && !start.Before(s)
}

// settled records when the authorizer was known to have left the old
// history after the last restore.
func (h *history) settled(at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.restores[len(h.restores)-1].Settled = at
}

// restored records that a restore, whose backup was taken at backup (the
// authority was stopped then), came up at up: the revocations acknowledged
// after the backup are taken back, and revisions start a new history. It
// returns the tokens whose revocation was taken back.
func (h *history) restored(backup, up time.Time) []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	var back []int
	for i := range h.revokes {
		r := &h.revokes[i]
		if r.Until.IsZero() && r.Ack.After(backup) && r.Ack.Before(up) {
			r.Until = up
			back = append(back, r.Token)
		}
	}
	h.restores = append(h.restores, restoreRec{Up: up})
	// Old revisions mean nothing to the new history.
	h.maxAcked = 0
	return back
}

// lastRevoke returns the last acknowledged revocation of token tok.
func (h *history) lastRevoke(tok int) revokeRec {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.revokes) - 1; i >= 0; i-- {
		if h.revokes[i].Token == tok {
			return h.revokes[i]
		}
	}
	return revokeRec{}
}

// voidTokens records tokens the key cut voids.
func (h *history) voidTokens(toks []int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, i := range toks {
		h.voided[i] = true
		delete(h.unsure, i)
	}
}

func (h *history) addToken(id, tok string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tokens = append(h.tokens, tokenRec{ID: id, Tok: tok, Minted: time.Now()})
	return len(h.tokens) - 1
}

func (h *history) addCheck(c checkRec) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, c)
}

func (h *history) addRevoke(r revokeRec) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.Gen = genAt(h.restores, r.Ack)
	h.revokes = append(h.revokes, r)
	delete(h.unsure, r.Token)
	h.maxAcked = max(h.maxAcked, r.Rev)
}

func (h *history) addUnsure(tok int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unsure[tok] = true
}

func (h *history) addWindow(w window) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.windows = append(h.windows, w)
}

// revokedSet returns the tokens with an acknowledged revocation, and their
// lowest acknowledged revision.
func (h *history) revokedSet() map[int]revokeRec {
	h.mu.Lock()
	defer h.mu.Unlock()
	return firstRevocations(h.revokes)
}

// snapshot copies the records for the checkers.
func (h *history) snapshot() (checks []checkRec, revokes []revokeRec, windows []window) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]checkRec(nil), h.checks...), append([]revokeRec(nil), h.revokes...), append([]window(nil), h.windows...)
}

// restoreTimes copies the restores for the checkers.
func (h *history) restoreTimes() []restoreRec {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]restoreRec(nil), h.restores...)
}

// bindingRevocations returns, for each token, the revocations a check of
// it is held to: its standing one (firstRevocations) and each one a
// restore took back (bound by Until).
func bindingRevocations(revokes []revokeRec) map[int][]revokeRec {
	m := map[int][]revokeRec{}
	for tok, r := range firstRevocations(revokes) {
		m[tok] = append(m[tok], r)
	}
	for _, r := range revokes {
		if !r.Until.IsZero() {
			m[r.Token] = append(m[r.Token], r)
		}
	}
	return m
}

// binds reports whether revocation r holds check c: a taken-back one only
// for checks that ended before the restore.
func binds(r revokeRec, c checkRec) bool {
	return r.Until.IsZero() || c.End.Before(r.Until)
}

// firstRevocations maps each revoked token to its earliest standing
// acknowledgement (a revocation repeated after an unsure one is
// acknowledged again, with the revision of the original); revocations a
// restore took back are left out.
func firstRevocations(revokes []revokeRec) map[int]revokeRec {
	m := map[int]revokeRec{}
	for _, r := range revokes {
		if !r.Until.IsZero() {
			continue
		}
		if old, ok := m[r.Token]; !ok || r.Ack.Before(old.Ack) {
			if ok && old.Rev < r.Rev {
				r.Rev = old.Rev
			}
			m[r.Token] = r
		} else if r.Rev < old.Rev {
			old.Rev = r.Rev
			m[r.Token] = old
		}
	}
	return m
}

// maxViolations caps each checker's report.
const maxViolations = 10

// checkMinRevision is invariant (a): no check allowed a token whose
// revocation was acknowledged at a revision at or below the check's
// min_revision, nor answered "allowed" at a revision at or above that of
// the token's revocation. (A min_revision at or above the revocation's
// revision binds whenever it was acknowledged: the authorizer must have
// applied it before answering.) Revision numbers are compared only within
// one history (restores, when given: a check that began and ended in the
// revocation's history); an answer's revision only once the restore has
// settled (before, an answer without min_revision may come from the old
// history, whose numbers mean other events).
func checkMinRevision(checks []checkRec, revokes []revokeRec, restores ...restoreRec) []string {
	rev := bindingRevocations(revokes)
	var out []string
	for _, c := range checks {
		if !c.Allowed {
			continue
		}
		for _, r := range rev[c.Token] {
			if !binds(r, c) || genAt(restores, c.Start) != r.Gen || genAt(restores, c.End) != r.Gen {
				continue
			}
			out = appendMinRevision(out, c, r, settledFor(restores, r.Gen, c.Start))
		}
		if len(out) >= maxViolations {
			break
		}
	}
	return out
}

// appendMinRevision appends c's violation of (a) against r, if any.
func appendMinRevision(out []string, c checkRec, r revokeRec, settled bool) []string {
	switch {
	case c.MinRev > 0 && c.MinRev >= r.Rev:
		out = append(out, fmt.Sprintf("(a) token %d allowed by a check started %s with min_revision %d; its revocation is revision %d (acknowledged %s)",
			c.Token, stamp(c.Start), c.MinRev, r.Rev, stamp(r.Ack)))
	case settled && c.Revision >= r.Rev:
		out = append(out, fmt.Sprintf("(a) token %d allowed at revision %d by a check started %s; its revocation is revision %d",
			c.Token, c.Revision, stamp(c.Start), r.Rev))
	}
	return out
}

// checkStalenessBound is invariant (b): no check that began later than a
// revocation's acknowledgement plus maxStaleness plus margin allowed the
// revoked token, whatever its min_revision.
func checkStalenessBound(checks []checkRec, revokes []revokeRec, maxStaleness, margin time.Duration) []string {
	rev := bindingRevocations(revokes)
	var out []string
	for _, c := range checks {
		if !c.Allowed {
			continue
		}
		for _, r := range rev[c.Token] {
			if !binds(r, c) {
				continue
			}
			out = appendLate(out, c, r, maxStaleness, margin)
		}
		if len(out) >= maxViolations {
			break
		}
	}
	return out
}

// appendLate appends c's violation of (b) against r, if any.
func appendLate(out []string, c checkRec, r revokeRec, maxStaleness, margin time.Duration) []string {
	if late := c.Start.Sub(r.Ack); late > maxStaleness+margin {
		out = append(out, fmt.Sprintf("(b) token %d allowed by a check started %s, %s after its revocation (revision %d) was acknowledged; bound %s + %s",
			c.Token, stamp(c.Start), late.Round(time.Millisecond), r.Rev, maxStaleness, margin))
	}
	return out
}

// checkUnavailableWhileStale is invariant (d): a check that began at least
// maxStaleness+margin into a window in which nothing could reach the
// authorizer, and ended inside it, failed with UNAVAILABLE: never an
// answer, allow or deny.
func checkUnavailableWhileStale(checks []checkRec, windows []window, maxStaleness, margin time.Duration) (out []string, inside int) {
	for _, w := range windows {
		from := w.From.Add(maxStaleness + margin)
		for _, c := range checks {
			if c.Start.Before(from) || !c.End.Before(w.To) {
				continue
			}
			inside++
			if c.Code != codes.Unavailable && len(out) < maxViolations {
				out = append(out, fmt.Sprintf("(d) check of token %d started %s, %s into %s, got %v (allowed %v, %v); want UNAVAILABLE",
					c.Token, stamp(c.Start), c.Start.Sub(w.From).Round(time.Millisecond), w.What, c.Code, c.Allowed, c.Reason))
			}
		}
	}
	return out, inside
}

// stamp formats t for a violation report.
func stamp(t time.Time) string { return t.Format("15:04:05.000") }

// summary counts a history's checks by outcome, for the log.
func summary(checks []checkRec) string {
	n := map[string]int{}
	for _, c := range checks {
		switch {
		case c.Code != codes.OK:
			n[c.Code.String()]++
		case c.Allowed:
			n["allowed"]++
		default:
			n[c.Reason.String()]++
		}
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := fmt.Sprintf("%d checks:", len(checks))
	for _, k := range keys {
		s += fmt.Sprintf(" %s %d", k, n[k])
	}
	return s
}
