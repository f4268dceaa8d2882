// Package store keeps the authority's state in one bbolt file: tokens
// (metadata only, never a token string), indexes, signing keys (private
// halves sealed by the caller), the revision-ordered event log, the audit log
// and the store epoch. bbolt types never leave this package.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// Errors returned by the store. Callers map them with errors.Is.
var (
	ErrNotFound    = errors.New("store: not found")
	ErrNameTaken   = errors.New("store: token name taken by a live token")
	ErrNotActive   = errors.New("store: token is not active")
	ErrCompacted   = errors.New("store: revision compacted")
	ErrLocked      = errors.New("store: database file is locked by another process")
	ErrKeyRevoked  = errors.New("store: signing key revoked")
	ErrClosed      = errors.New("store: closed")
	ErrKeyExists   = errors.New("store: key exists")
	ErrTokenExists = errors.New("store: token id exists")

	// ErrBadPageToken is returned by ListTokens and ListAudit for a page
	// token that is not one they made for the same filter.
	ErrBadPageToken = errors.New("store: bad page token")
	// ErrInvalid is returned for an argument the store cannot accept (an
	// empty id, a zero time, a rotation that changes the name); the server
	// validates requests first, so it means a caller bug.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrSchemaVersion is returned by Open for a file written with a schema
	// this build does not know.
	ErrSchemaVersion = errors.New("store: unsupported schema version")
	// ErrCorrupt is returned when a stored record or the file's layout cannot
	// be decoded.
	ErrCorrupt = errors.New("store: corrupt data")
	// ErrUnavailable is returned when a networked backend (etcd) cannot
	// commit or read now: no quorum, no leader, a timeout. The mutation
	// was not acknowledged; after a timeout it may still have committed,
	// so a retry can meet its effect (ErrTokenExists, an already revoked
	// token).
	ErrUnavailable = errors.New("store: unavailable")
	// ErrDiskFull (with ErrUnavailable) is returned when the disk under
	// the bbolt file has no space left: the transaction was rolled back,
	// nothing was written.
	ErrDiskFull = errors.New("store: no space left on the disk")
	// ErrReadOnly (with ErrUnavailable) is returned when the file system
	// under the bbolt file is read-only (often remounted so after an I/O
	// error): the transaction was rolled back, nothing was written.
	ErrReadOnly = errors.New("store: the disk is read-only")
	// ErrWritesStalled (with ErrUnavailable) is returned, without trying,
	// for a management write while the authority's write probe finds that
	// writes do not commit (a hung or frozen disk, etcd without quorum):
	// nothing was written.
	ErrWritesStalled = errors.New("store: writes are stalled")
	// ErrTooLarge is returned when a mutation does not fit the backend's
	// limits even in chunks (etcd: the intent record of a chunked
	// revocation exceeds the request size limit).
	ErrTooLarge = errors.New("store: mutation too large for the backend")
)

// ActorSystem is the audit actor of changes the authority makes by itself,
// such as a pending signing key becoming active (SetKeyState).
const ActorSystem = "system"

// Token is the stored metadata of a PAT. It never holds the secret.
type Token struct {
	ID           string // lower-case hex of the 128-bit token id
	OrgID        string
	Name         string
	Description  string
	Grants       []scope.Grant // effective grants
	CreatedBy    string
	ParentID     string // token through which it was minted; empty for the operator
	KeyID        string
	CreateTime   time.Time
	ExpireTime   time.Time
	RevokeTime   time.Time // zero while not revoked
	RevokeReason string
	RevokeRev    uint64 // revision of the revocation; 0 while not revoked
	// LastUseTime is the minute of the last use an authorizer reported
	// (RecordTokenUse); zero when never used. It is kept beside the
	// record, not in it: the store fills it in on reads and ignores it on
	// writes.
	LastUseTime time.Time
}

// State values of a token at a given time.
type TokenState int

// Token states.
const (
	StateAny TokenState = iota
	StateActive
	StateRevoked
	StateExpired
)

// StateAt returns the token's state at now.
func (t *Token) StateAt(now time.Time) TokenState {
	switch {
	case !t.RevokeTime.IsZero():
		return StateRevoked
	case !now.Before(t.ExpireTime):
		return StateExpired
	default:
		return StateActive
	}
}

// KeyState is the state of a signing key.
type KeyState int

// Key states.
const (
	KeyPending KeyState = iota + 1
	KeyActive
	KeyVerifyOnly
	KeyRevoked
)

// Key is a signing key. SealedPrivate is the private key encrypted by the
// caller with the key-encryption key; the store never sees it in clear.
type Key struct {
	ID            string
	State         KeyState
	Public        []byte // Ed25519 public key, 32 bytes
	SealedPrivate []byte
	CreateTime    time.Time
	ActivateTime  time.Time // when it signs (or signed) new tokens
	RevokeTime    time.Time
	LastExpiry    time.Time // latest expiry of the tokens it signed
	// RevokedIssuedAfter, when set, is the key's cut (CutKey): tokens it
	// signed with an issue time in or after this time's second are revoked.
	RevokedIssuedAfter time.Time
}

// AuditAction says what an audited mutation did.
type AuditAction int

// Audit actions.
const (
	AuditTokenCreated AuditAction = iota + 1
	AuditTokenRevoked
	AuditTokenRotated
	AuditTokensRevoked
	AuditKeyRotated
	AuditKeyRevoked
	AuditTokenLeaked // revoked as found in public (ReportLeakedTokens)
	// AuditTokenExpiring is an expiry notice (NoticeExpiring): Reason
	// says the lead time and the expiry.
	AuditTokenExpiring // the last: the codec rejects actions past it
)

// AuditRecord is one append-only audit entry. Revision is set by the store.
type AuditRecord struct {
	Revision uint64
	Time     time.Time
	Actor    string // "operator" or "token:<id>"
	OrgID    string // empty for deployment-wide actions
	Action   AuditAction
	TokenID  string
	Name     string
	Grants   []scope.Grant
	Reason   string
	Count    int64 // AuditTokensRevoked: tokens selected; AuditTokenRevoked: descendants the cascade revoked
	KeyID    string
}

// EventKind is the kind of a revision-log event.
type EventKind int

// Event kinds.
const (
	EventTokenCreated EventKind = iota + 1 // not streamed; keeps revisions dense
	EventTokenRevoked
	EventKeyAdded // also used when a key changes state (pending → active → verify-only)
	EventKeyRevoked
	// EventTokenExpiring is an expiry notice (NoticeExpiring): not
	// streamed, it gives the notice's audit record a revision of its own.
	EventTokenExpiring
)

// Event is one entry of the revision-ordered event log.
type Event struct {
	Revision  uint64
	Kind      EventKind
	TokenID   string    // EventTokenCreated, EventTokenRevoked
	ExpiresAt time.Time // EventTokenRevoked: expiry of the token
	Key       *Key      // EventKeyAdded: public part only (SealedPrivate nil)
	KeyID     string    // EventKeyRevoked
}

// Revoked is a revoked token that has not expired, as in a snapshot.
type Revoked struct {
	TokenID   string
	ExpiresAt time.Time
}

// Snapshot is what a new follower loads.
type Snapshot struct {
	Epoch    string
	Revision uint64
	Digest   []byte // history digest at Revision (DigestAt)
	Revoked  []Revoked
	Keys     []Key // public parts only
}

// ListFilter selects tokens of an organization. Tokens come newest first;
// PageToken is opaque and comes from a previous page.
type ListFilter struct {
	OrgID     string
	CreatedBy string
	State     TokenState
	Now       time.Time
	PageSize  int
	PageToken string
	// UnusedSince, when set, keeps the tokens never used or last used
	// before it.
	UnusedSince time.Time
	// ExpireBefore, when set, keeps the tokens that expire before it.
	ExpireBefore time.Time
}

// AuditFilter selects an organization's audit records (the empty
// organization: the deployment-wide ones). PageToken is opaque and comes
// from a previous page.
type AuditFilter struct {
	OrgID     string
	PageSize  int
	PageToken string
}

// Store is the authority's storage. Every mutation is committed (fsync)
// before it returns, appends its events with the next revisions (one per
// token or key it changes: a bulk revocation and a rotation append several),
// and writes its audit record in the same transaction. The interface is
// small and free of bbolt types so that another backend (etcd, say) can
// implement it with its own revisions and watch.
type Store interface {
	// Epoch is the random id made when the file was created.
	Epoch() string
	// Revision is the last committed revision.
	Revision() uint64
	// Changed returns a channel closed at the next committed revision.
	Changed() <-chan struct{}

	// CreateToken stores a new token. ErrNameTaken when a live token of the
	// organization has the name (revoked and expired ones free it).
	CreateToken(ctx context.Context, t Token, a AuditRecord) (uint64, error)
	// GetToken returns one token. ErrNotFound when unknown.
	GetToken(ctx context.Context, id string) (Token, error)
	// ListTokens returns one page and the next page token ("" at the end).
	ListTokens(ctx context.Context, f ListFilter) ([]Token, string, error)
	// RevokeToken revokes one token and every unrevoked token minted
	// through it, transitively (the cascade), and returns the token, the
	// revision at which all are revoked and the number of descendants
	// revoked. Revoking a revoked token changes nothing and returns its
	// original revocation (unless descendants are still unrevoked: they are
	// revoked then).
	RevokeToken(ctx context.Context, id string, a AuditRecord) (Token, uint64, int64, error)
	// RevokeTokens revokes every live token of an organization, or only those
	// of one creator when createdBy is set, and their unrevoked descendants,
	// atomically. It returns the count (descendants included) and the
	// revision at which all are revoked.
	RevokeTokens(ctx context.Context, orgID, createdBy string, a AuditRecord) (int64, uint64, error)
	// RevokeUnrecorded revokes a token the store has no record of (one
	// minted after the backup a restored file was made from), by what the
	// token itself says. ErrTokenExists when there is a record.
	RevokeUnrecorded(ctx context.Context, t Token, a AuditRecord) (uint64, bool, error)
	// RotateToken revokes oldID and its unrevoked descendants (never next)
	// and stores next (same name) in one transaction. ErrNotActive when the
	// old token is revoked or expired. It returns the revision of the old
	// token's revocation and the number of descendants revoked.
	RotateToken(ctx context.Context, oldID string, next Token, a AuditRecord) (uint64, int64, error)

	// AddKey stores a new signing key.
	AddKey(ctx context.Context, k Key, a AuditRecord) (uint64, error)
	// SetKeyState moves a key to pending, active or verify-only (not revoked).
	SetKeyState(ctx context.Context, id string, s KeyState) (uint64, error)
	// RevokeKey revokes a key at once.
	RevokeKey(ctx context.Context, id string, a AuditRecord) (uint64, error)
	// CutKey revokes the tokens a key signed after a time: the key becomes
	// verify-only with that cut.
	CutKey(ctx context.Context, id string, issuedAfter time.Time, a AuditRecord) (uint64, error)
	// ListKeys returns every key, oldest first, with their sealed private halves.
	ListKeys(ctx context.Context) ([]Key, error)

	// ListAudit returns one page of an organization's audit records, oldest
	// first, and the next page token ("" at the end), as ListTokens does.
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditRecord, string, error)

	// Snapshot returns the revoked-but-unexpired tokens at now and all keys.
	Snapshot(ctx context.Context, now time.Time) (Snapshot, error)
	// SnapshotStreamer reads the same snapshot in chunks (SnapshotEach).
	SnapshotStreamer
	// EventsAfter returns up to limit streamed events with revision > after
	// (token creations and expiry notices are skipped). ErrCompacted when events after `after`
	// are gone.
	EventsAfter(ctx context.Context, after uint64, limit int) ([]Event, error)
	// Compact drops events no follower needs: revocations of tokens expired
	// before now, and every token-created event. It returns the compacted
	// revision (followers behind it need a snapshot).
	Compact(ctx context.Context, now time.Time) (uint64, error)
	// DigestAt returns the history digest at rev: a hash over every event up
	// to rev. ErrCompacted when the store does not hold it (below the
	// compaction floor or the start of the chain, or ahead of the store).
	DigestAt(ctx context.Context, rev uint64) ([]byte, error)

	// ProbeWrite commits a transaction that changes nothing, through the
	// commit path every mutation takes: it hangs or fails when writes do.
	ProbeWrite(ctx context.Context) error

	// RecordTokenUse records when tokens were last used (at most
	// MaxTokenUses, minute precision): each use only when its token is
	// stored and the use is later than the recorded one, in one
	// transaction that takes no revision (a use is not an event). It
	// returns how many were recorded; unknown tokens are skipped.
	RecordTokenUse(ctx context.Context, uses []TokenUse) (int, error)

	// Close closes the file.
	Close() error

	// SetOutbox turns the webhook outbox on or off for the mutations that
	// follow (off when opened): see outbox.go.
	SetOutbox(on bool)
	// ListOutbox returns outbox entries in order (OutboxFilter).
	ListOutbox(ctx context.Context, f OutboxFilter) ([]OutboxEntry, error)
	// AckOutbox deletes a delivered entry; one already gone is no error.
	AckOutbox(ctx context.Context, seq uint64) error
	// RetryOutbox records a failed delivery attempt of a pending entry
	// (Attempts, NextAttempt, LastError); with failed, the entry moves to
	// the failed list. ErrNotFound when it is no longer pending.
	RetryOutbox(ctx context.Context, e OutboxEntry, failed bool) error
	// OutboxCounts returns the number of pending and failed entries.
	OutboxCounts(ctx context.Context) (pending, failed int, err error)
	// NoticeExpiring makes the expiry notices due at now for the lead
	// times leads, at most MaxNoticesPerCall, and returns how many: see
	// notice.go.
	NoticeExpiring(ctx context.Context, now time.Time, leads []time.Duration) (int, error)
}
