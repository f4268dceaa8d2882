package server

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func grantsToProto(gs []scope.Grant) []*sigilv1.Grant {
	out := make([]*sigilv1.Grant, len(gs))
	for i, g := range gs {
		out[i] = &sigilv1.Grant{Permissions: g.Permissions, Resources: g.Resources}
	}
	return out
}

func tokenStateToProto(s store.TokenState) sigilv1.TokenState {
	switch s {
	case store.StateActive:
		return sigilv1.TokenState_TOKEN_STATE_ACTIVE
	case store.StateRevoked:
		return sigilv1.TokenState_TOKEN_STATE_REVOKED
	case store.StateExpired:
		return sigilv1.TokenState_TOKEN_STATE_EXPIRED
	}
	return sigilv1.TokenState_TOKEN_STATE_UNSPECIFIED
}

func tokenStateFromProto(s sigilv1.TokenState) store.TokenState {
	switch s {
	case sigilv1.TokenState_TOKEN_STATE_ACTIVE:
		return store.StateActive
	case sigilv1.TokenState_TOKEN_STATE_REVOKED:
		return store.StateRevoked
	case sigilv1.TokenState_TOKEN_STATE_EXPIRED:
		return store.StateExpired
	}
	return store.StateAny
}

func tokenInfo(t store.Token, now time.Time) *sigilv1.TokenInfo {
	return &sigilv1.TokenInfo{
		TokenId:       t.ID,
		OrgId:         t.OrgID,
		Name:          t.Name,
		Description:   t.Description,
		Grants:        grantsToProto(t.Grants),
		CreatedBy:     t.CreatedBy,
		ParentTokenId: t.ParentID,
		KeyId:         t.KeyID,
		CreateTime:    ts(t.CreateTime),
		ExpireTime:    ts(t.ExpireTime),
		RevokeTime:    ts(t.RevokeTime),
		RevokeReason:  t.RevokeReason,
		State:         tokenStateToProto(t.StateAt(now)),
		LastUseTime:   ts(t.LastUseTime),
	}
}

func keyStateToProto(s store.KeyState) sigilv1.SigningKeyState {
	switch s {
	case store.KeyPending:
		return sigilv1.SigningKeyState_SIGNING_KEY_STATE_PENDING
	case store.KeyActive:
		return sigilv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE
	case store.KeyVerifyOnly:
		return sigilv1.SigningKeyState_SIGNING_KEY_STATE_VERIFY_ONLY
	case store.KeyRevoked:
		return sigilv1.SigningKeyState_SIGNING_KEY_STATE_REVOKED
	}
	return sigilv1.SigningKeyState_SIGNING_KEY_STATE_UNSPECIFIED
}

// keyToProto returns the public part of a key.
func keyToProto(k store.Key) *sigilv1.SigningKey {
	return &sigilv1.SigningKey{
		KeyId:        k.ID,
		State:        keyStateToProto(k.State),
		CreateTime:   ts(k.CreateTime),
		PublicKey:    append([]byte(nil), k.Public...),
		ActivateTime: ts(k.ActivateTime),
		// Unset when the key has no cut (ts gives nil for the zero time).
		RevokedIssuedAfter: ts(k.RevokedIssuedAfter),
	}
}

func auditActionToProto(a store.AuditAction) sigilv1.AuditAction {
	switch a {
	case store.AuditTokenCreated:
		return sigilv1.AuditAction_AUDIT_ACTION_TOKEN_CREATED
	case store.AuditTokenRevoked:
		return sigilv1.AuditAction_AUDIT_ACTION_TOKEN_REVOKED
	case store.AuditTokenRotated:
		return sigilv1.AuditAction_AUDIT_ACTION_TOKEN_ROTATED
	case store.AuditTokensRevoked:
		return sigilv1.AuditAction_AUDIT_ACTION_TOKENS_REVOKED
	case store.AuditKeyRotated:
		return sigilv1.AuditAction_AUDIT_ACTION_SIGNING_KEY_ROTATED
	case store.AuditKeyRevoked:
		return sigilv1.AuditAction_AUDIT_ACTION_SIGNING_KEY_REVOKED
	case store.AuditTokenLeaked:
		return sigilv1.AuditAction_AUDIT_ACTION_TOKEN_LEAKED
	case store.AuditTokenExpiring:
		return sigilv1.AuditAction_AUDIT_ACTION_TOKEN_EXPIRING
	}
	return sigilv1.AuditAction_AUDIT_ACTION_UNSPECIFIED
}

func auditToProto(a store.AuditRecord) *sigilv1.AuditEvent {
	return &sigilv1.AuditEvent{
		Revision: a.Revision,
		Time:     ts(a.Time),
		Actor:    a.Actor,
		OrgId:    a.OrgID,
		Action:   auditActionToProto(a.Action),
		TokenId:  a.TokenID,
		Name:     a.Name,
		Grants:   grantsToProto(a.Grants),
		Reason:   a.Reason,
		Count:    a.Count,
		KeyId:    a.KeyID,
	}
}
