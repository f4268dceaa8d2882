package server

import (
	"context"
	"errors"
	"time"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// CreateToken mints a token. From the operator, created_by is required; from
// a PAT holding organization:tokens it is the calling token's created_by (an
// explicit different value is PERMISSION_DENIED), the new token's parent is
// the calling token, and grants and expiry may not exceed the caller's.
func (s *Server) CreateToken(ctx context.Context, req *sigilv1.CreateTokenRequest) (*sigilv1.CreateTokenResponse, error) {
	now := s.now()
	var v violations
	checkIdent(&v, "org_id", req.GetOrgId(), true)
	checkIdent(&v, "name", req.GetName(), true)
	checkText(&v, "description", req.GetDescription(), maxDescriptionLen, true)
	checkIdent(&v, "created_by", req.GetCreatedBy(), false)
	s.checkNoSecret(&v, "org_id", req.GetOrgId())
	s.checkNoSecret(&v, "name", req.GetName())
	s.checkNoSecret(&v, "description", req.GetDescription())
	s.checkNoSecret(&v, "created_by", req.GetCreatedBy())
	grants := s.grants(&v, req.GetGrants())
	expire := s.expiry(&v, now, req.GetExpiresAt(), req.GetTtl())
	if err := v.err(); err != nil {
		return nil, err
	}

	c, err := s.authenticateManager(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if err := c.canManage(req.GetOrgId()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	createdBy, parent := req.GetCreatedBy(), ""
	if c.kind == callerPAT {
		if createdBy != "" && createdBy != c.token.CreatedBy {
			return nil, s.toStatus(ctx, denied("a token mints only for its own creator (%q)", c.token.CreatedBy))
		}
		createdBy, parent = c.token.CreatedBy, c.token.ID
		if err := c.checkNoEscalation(grants, expire); err != nil {
			return nil, s.toStatus(ctx, err)
		}
	} else if createdBy == "" {
		return nil, invalid("created_by", "required when the operator mints")
	}

	t := store.Token{
		OrgID: req.GetOrgId(), Name: req.GetName(), Description: req.GetDescription(), Grants: grants,
		CreatedBy: createdBy, ParentID: parent, CreateTime: now.Truncate(time.Second), ExpireTime: expire,
	}
	secret, t, _, err := s.mintAndStore(ctx, t, func(t store.Token) (uint64, error) {
		return s.store.CreateToken(ctx, t, store.AuditRecord{
			Time: now, Actor: c.actor(), OrgID: t.OrgID, Action: store.AuditTokenCreated,
			TokenID: t.ID, Name: t.Name, Grants: t.Grants,
		})
	})
	if err != nil {
		if errors.Is(err, store.ErrNameTaken) {
			return nil, status.Errorf(codes.AlreadyExists, "name %q is taken by a live token of organization %q", req.GetName(), req.GetOrgId())
		}
		return nil, s.toStatus(ctx, err)
	}
	s.metrics.minted.Inc()
	return &sigilv1.CreateTokenResponse{Token: secret, Info: tokenInfo(t, now)}, nil
}

// mintAndStore signs t with the active key and stores it with save. When
// the key is revoked between the two, it retries once with the new key.
func (s *Server) mintAndStore(ctx context.Context, t store.Token, save func(store.Token) (uint64, error)) (string, store.Token, uint64, error) {
	for attempt := 0; ; attempt++ {
		id, err := token.NewID()
		if err != nil {
			return "", t, 0, err
		}
		keyID, priv, err := s.keys.Signer()
		if err != nil {
			return "", t, 0, err
		}
		t.ID, t.KeyID = id.String(), keyID
		secret, err := s.codec.Mint(token.Claims{
			ID: id, OrgID: t.OrgID, KeyID: keyID, IssuedAt: t.CreateTime, ExpiresAt: t.ExpireTime, Grants: t.Grants,
		}, priv)
		if err != nil {
			return "", t, 0, err
		}
		rev, err := save(t)
		if errors.Is(err, store.ErrKeyRevoked) && attempt == 0 {
			continue
		}
		if err != nil {
			return "", t, 0, err
		}
		return secret, t, rev, nil
	}
}
