package server

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
)

// RotateSigningKey adds a pending key (operator only), announced at once on
// the stream and signing after the activation delay.
func (s *Server) RotateSigningKey(ctx context.Context, _ *sigilv1.RotateSigningKeyRequest) (*sigilv1.RotateSigningKeyResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessOperator)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	k, rev, err := s.mgr.RotateSigningKey(ctx, c)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &sigilv1.RotateSigningKeyResponse{KeyId: k.ID, Revision: rev, ActivateTime: timestamppb.New(k.ActivateTime)}, nil
}

// RevokeSigningKey revokes a key at once (operator only) or, with
// issued_after, only the tokens it signed after that time (a cut: the key
// stops signing and announces the cut on the stream).
func (s *Server) RevokeSigningKey(ctx context.Context, req *sigilv1.RevokeSigningKeyRequest) (*sigilv1.RevokeSigningKeyResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessOperator)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var v violations
	checkIdent(&v, "key_id", req.GetKeyId(), true)
	if ia := req.GetIssuedAfter(); ia != nil {
		if err := ia.CheckValid(); err != nil || ia.AsTime().Unix() <= 0 {
			v.add("issued_after", "must be a valid time after 1970")
		}
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	var rev uint64
	if ia := req.GetIssuedAfter(); ia != nil {
		rev, err = s.mgr.CutSigningKey(ctx, c, req.GetKeyId(), ia.AsTime())
	} else {
		rev, err = s.mgr.RevokeSigningKey(ctx, c, req.GetKeyId())
	}
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &sigilv1.RevokeSigningKeyResponse{Revision: rev}, nil
}

// ListSigningKeys lists the public halves of the keys (operator only).
func (s *Server) ListSigningKeys(ctx context.Context, _ *sigilv1.ListSigningKeysRequest) (*sigilv1.ListSigningKeysResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessOperator)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	ks, err := s.mgr.ListSigningKeys(c)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &sigilv1.ListSigningKeysResponse{Keys: make([]*sigilv1.SigningKey, len(ks))}
	for i, k := range ks {
		resp.Keys[i] = keyToProto(k)
	}
	return resp, nil
}
