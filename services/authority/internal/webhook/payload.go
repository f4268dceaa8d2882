package webhook

import (
	"encoding/json"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// Payload is the body of a webhook request (the Standard Webhooks
// envelope): the event type, when it happened and what it concerns.
type Payload struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      Data      `json:"data"`
}

// Data is what an event concerns. It never holds a secret: ids, names,
// times and reasons. Fields that do not apply to the event are left out.
type Data struct {
	Revision   uint64     `json:"revision"` // store revision of the change
	Actor      string     `json:"actor"`    // "operator", "token:<id>" or "system"
	OrgID      string     `json:"org_id,omitempty"`
	TokenID    string     `json:"token_id,omitempty"`
	NewTokenID string     `json:"new_token_id,omitempty"` // token.rotated: the replacement
	Name       string     `json:"name,omitempty"`
	CreatedBy  string     `json:"created_by,omitempty"`
	ParentID   string     `json:"parent_id,omitempty"`
	KeyID      string     `json:"key_id,omitempty"`
	KeyState   string     `json:"key_state,omitempty"`
	CreateTime *time.Time `json:"create_time,omitempty"`
	ExpireTime *time.Time `json:"expire_time,omitempty"`
	RevokeTime *time.Time `json:"revoke_time,omitempty"`
	// RevokedIssuedAfter is a key cut: tokens the key signed at or after
	// it are revoked.
	RevokedIssuedAfter *time.Time `json:"revoked_issued_after,omitempty"`
	Reason             string     `json:"reason,omitempty"`
	// CascadeCount (token.revoked, token.leaked): for RevokeToken and a
	// leak report, the descendants
	// revoked with the token (each has its own event); zero for the
	// tokens of a bulk revocation and of the cascade.
	CascadeCount *int64 `json:"cascade_count,omitempty"`
	// LeadSeconds (token.expiring): the notice's lead time.
	LeadSeconds *int64 `json:"lead_seconds,omitempty"`
}

// PayloadOf returns the payload of an outbox entry.
func PayloadOf(e *store.OutboxEntry) Payload {
	d := Data{
		Revision: e.Revision, Actor: e.Actor, OrgID: e.OrgID, TokenID: e.TokenID, NewTokenID: e.NewTokenID,
		Name: e.Name, CreatedBy: e.CreatedBy, ParentID: e.ParentID, KeyID: e.KeyID, KeyState: e.KeyState,
		CreateTime: optTime(e.CreateTime), ExpireTime: optTime(e.ExpireTime), RevokeTime: optTime(e.RevokeTime),
		RevokedIssuedAfter: optTime(e.CutTime), Reason: e.Reason,
	}
	switch e.Type {
	case store.WebhookTokenRevoked, store.WebhookTokenLeaked:
		n := e.Count
		d.CascadeCount = &n
	case store.WebhookTokenExpiring:
		s := int64(e.Lead / time.Second)
		d.LeadSeconds = &s
	}
	return Payload{Type: e.Type, Timestamp: e.Time.UTC(), Data: d}
}

// Body returns the JSON body of an outbox entry: the same bytes for every
// attempt.
func Body(e *store.OutboxEntry) ([]byte, error) {
	return json.Marshal(PayloadOf(e))
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
