package store

import (
	"context"
	"time"
)

// The mutations are written once, against the writer (kv.go), and each
// backend runs them in its own transactions. These are Bolt's.

// CreateToken stores a new token: see createToken.
func (s *Bolt) CreateToken(ctx context.Context, t Token, a AuditRecord) (uint64, error) {
	return createToken(ctx, s, t, a)
}

// RevokeToken revokes a token and its descendants: see revokeTokenOp.
func (s *Bolt) RevokeToken(ctx context.Context, id string, a AuditRecord) (Token, uint64, int64, error) {
	return revokeTokenOp(ctx, s, id, a)
}

// RevokeTokens revokes an organization's or a creator's live tokens: see
// revokeTokens.
func (s *Bolt) RevokeTokens(ctx context.Context, orgID, createdBy string, a AuditRecord) (int64, uint64, error) {
	return revokeTokens(ctx, s, orgID, createdBy, a)
}

// RotateToken replaces a token: see rotateToken.
func (s *Bolt) RotateToken(ctx context.Context, oldID string, next Token, a AuditRecord) (uint64, int64, error) {
	return rotateToken(ctx, s, oldID, next, a)
}

// RevokeUnrecorded revokes a token the store has no record of: see
// revokeUnrecorded.
func (s *Bolt) RevokeUnrecorded(ctx context.Context, t Token, a AuditRecord) (uint64, bool, error) {
	return revokeUnrecorded(ctx, s, t, a)
}

// AddKey stores a new signing key: see addKey.
func (s *Bolt) AddKey(ctx context.Context, k Key, a AuditRecord) (uint64, error) {
	return addKey(ctx, s, k, a)
}

// SetKeyState changes a key's state: see setKeyState.
func (s *Bolt) SetKeyState(ctx context.Context, id string, st KeyState) (uint64, error) {
	return setKeyState(ctx, s, id, st)
}

// RevokeKey revokes a signing key: see revokeKey.
func (s *Bolt) RevokeKey(ctx context.Context, id string, a AuditRecord) (uint64, error) {
	return revokeKey(ctx, s, id, a)
}

// CutKey cuts a signing key: see cutKey.
func (s *Bolt) CutKey(ctx context.Context, id string, issuedAfter time.Time, a AuditRecord) (uint64, error) {
	return cutKey(ctx, s, id, issuedAfter, a)
}
