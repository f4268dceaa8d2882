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
}

func newHistory() *history { return &history{unsure: map[int]bool{}} }

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

// firstRevocations maps each revoked token to its earliest acknowledgement
// (a revocation repeated after an unsure one is acknowledged again, with
// the revision of the original).
func firstRevocations(revokes []revokeRec) map[int]revokeRec {
	m := map[int]revokeRec{}
	for _, r := range revokes {
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
// applied it before answering.)
func checkMinRevision(checks []checkRec, revokes []revokeRec) []string {
	rev := firstRevocations(revokes)
	var out []string
	for _, c := range checks {
		r, ok := rev[c.Token]
		if !ok || !c.Allowed {
			continue
		}
		switch {
		case c.MinRev > 0 && c.MinRev >= r.Rev:
			out = append(out, fmt.Sprintf("(a) token %d allowed by a check started %s with min_revision %d; its revocation is revision %d (acknowledged %s)",
				c.Token, stamp(c.Start), c.MinRev, r.Rev, stamp(r.Ack)))
		case c.Revision >= r.Rev:
			out = append(out, fmt.Sprintf("(a) token %d allowed at revision %d by a check started %s; its revocation is revision %d",
				c.Token, c.Revision, stamp(c.Start), r.Rev))
		}
		if len(out) == maxViolations {
			break
		}
	}
	return out
}

// checkStalenessBound is invariant (b): no check that began later than a
// revocation's acknowledgement plus maxStaleness plus margin allowed the
// revoked token, whatever its min_revision.
func checkStalenessBound(checks []checkRec, revokes []revokeRec, maxStaleness, margin time.Duration) []string {
	rev := firstRevocations(revokes)
	var out []string
	for _, c := range checks {
		r, ok := rev[c.Token]
		if !ok || !c.Allowed {
			continue
		}
		if late := c.Start.Sub(r.Ack); late > maxStaleness+margin {
			out = append(out, fmt.Sprintf("(b) token %d allowed by a check started %s, %s after its revocation (revision %d) was acknowledged; bound %s + %s",
				c.Token, stamp(c.Start), late.Round(time.Millisecond), r.Rev, maxStaleness, margin))
			if len(out) == maxViolations {
				break
			}
		}
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
