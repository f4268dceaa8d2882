package server

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// TestErrorsNeverEchoRequestValues mints a real token and feeds it into
// every text field of every RPC, as the operator, as an organization
// manager and as the token itself: neither the token nor a piece of its body
// (without the prefix) may appear in a response, an error message, a status detail or
// a log line (the logging interceptor logs each call's error).
func TestErrorsNeverEchoRequestValues(t *testing.T) {
	e := newEnv(t, envOpts{})
	secret := e.mint("org-1", "victim", "alice").GetToken()
	body := strings.TrimPrefix(secret, e.codec.Prefix())
	// A piece of the body: a message quoting a shortened value still holds it.
	piece := body[:16]
	mgr := e.manager("org-1", "mgr", "alice", "domain:view")
	if len(body) < 20 || body == secret {
		t.Fatalf("token body %d bytes", len(body))
	}
	check := func(t *testing.T, what string, resp proto.Message, err error) {
		t.Helper()
		texts := []string{prototext.Format(resp)}
		if st, ok := status.FromError(err); ok {
			texts = append(texts, st.Message(), prototext.Format(st.Proto()))
		}
		for _, s := range texts {
			if strings.Contains(s, secret) || strings.Contains(s, piece) {
				t.Errorf("%s: the token is echoed in %q", what, s)
			}
		}
	}
	valid := func() *sigilv1.CreateTokenRequest {
		return &sigilv1.CreateTokenRequest{OrgId: "org-1", Name: "n", Description: "d", CreatedBy: "alice",
			Grants: []*sigilv1.Grant{grant([]string{"domain:view"}, "domains/example.com")}, Expiry: ttl(30 * day)}
	}
	type call struct {
		name string
		do   func(ctx context.Context) (proto.Message, error)
	}
	calls := []call{}
	for field, set := range map[string]func(r *sigilv1.CreateTokenRequest){
		"org_id":             func(r *sigilv1.CreateTokenRequest) { r.OrgId = secret },
		"name":               func(r *sigilv1.CreateTokenRequest) { r.Name = secret },
		"description":        func(r *sigilv1.CreateTokenRequest) { r.Description = secret },
		"created_by":         func(r *sigilv1.CreateTokenRequest) { r.CreatedBy = secret },
		"permission":         func(r *sigilv1.CreateTokenRequest) { r.Grants[0].Permissions = []string{secret} },
		"resource":           func(r *sigilv1.CreateTokenRequest) { r.Grants[0].Resources = []string{secret} },
		"body in permission": func(r *sigilv1.CreateTokenRequest) { r.Grants[0].Permissions = []string{body} },
		"body in resource":   func(r *sigilv1.CreateTokenRequest) { r.Grants[0].Resources = []string{body} },
	} {
		calls = append(calls, call{"CreateToken " + field, func(ctx context.Context) (proto.Message, error) {
			r := valid()
			set(r)
			return e.client.CreateToken(ctx, r)
		}})
	}
	calls = append(calls,
		call{"GetToken token_id", func(ctx context.Context) (proto.Message, error) {
			return e.client.GetToken(ctx, &sigilv1.GetTokenRequest{TokenId: secret})
		}},
		call{"ListTokens org_id", func(ctx context.Context) (proto.Message, error) {
			return e.client.ListTokens(ctx, &sigilv1.ListTokensRequest{OrgId: secret})
		}},
		call{"ListTokens created_by", func(ctx context.Context) (proto.Message, error) {
			return e.client.ListTokens(ctx, &sigilv1.ListTokensRequest{OrgId: "org-1", CreatedBy: secret})
		}},
		call{"ListTokens page_token", func(ctx context.Context) (proto.Message, error) {
			return e.client.ListTokens(ctx, &sigilv1.ListTokensRequest{OrgId: "org-1", PageToken: secret})
		}},
		call{"RevokeToken token_id", func(ctx context.Context) (proto.Message, error) {
			return e.client.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: secret})
		}},
		call{"RevokeToken reason", func(ctx context.Context) (proto.Message, error) {
			return e.client.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{Self: true, Reason: secret})
		}},
		call{"RevokeTokens org_id", func(ctx context.Context) (proto.Message, error) {
			return e.client.RevokeTokens(ctx, &sigilv1.RevokeTokensRequest{OrgId: secret, CreatedBy: "nobody"})
		}},
		call{"RevokeTokens created_by", func(ctx context.Context) (proto.Message, error) {
			return e.client.RevokeTokens(ctx, &sigilv1.RevokeTokensRequest{OrgId: "org-1", CreatedBy: secret})
		}},
		call{"RevokeTokens reason", func(ctx context.Context) (proto.Message, error) {
			return e.client.RevokeTokens(ctx, &sigilv1.RevokeTokensRequest{OrgId: "org-1", CreatedBy: "nobody", Reason: secret})
		}},
		call{"RotateToken token_id", func(ctx context.Context) (proto.Message, error) {
			return e.client.RotateToken(ctx, &sigilv1.RotateTokenRequest{TokenId: secret, Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: ttl(8 * day).Ttl}})
		}},
		call{"ListAuditEvents org_id", func(ctx context.Context) (proto.Message, error) {
			return e.client.ListAuditEvents(ctx, &sigilv1.ListAuditEventsRequest{OrgId: secret})
		}},
		call{"ListAuditEvents page_token", func(ctx context.Context) (proto.Message, error) {
			return e.client.ListAuditEvents(ctx, &sigilv1.ListAuditEventsRequest{OrgId: "org-1", PageToken: secret})
		}},
		call{"ListAuditEvents body as page_token", func(ctx context.Context) (proto.Message, error) {
			return e.client.ListAuditEvents(ctx, &sigilv1.ListAuditEventsRequest{OrgId: "org-1", PageToken: body})
		}},
		call{"RevokeSigningKey key_id", func(ctx context.Context) (proto.Message, error) {
			return e.client.RevokeSigningKey(ctx, &sigilv1.RevokeSigningKeyRequest{KeyId: secret})
		}},
		call{"RevokeSigningKey body as key_id", func(ctx context.Context) (proto.Message, error) {
			return e.client.RevokeSigningKey(ctx, &sigilv1.RevokeSigningKeyRequest{KeyId: body})
		}},
		call{"WatchRevocations epoch", func(ctx context.Context) (proto.Message, error) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			s, err := e.client.WatchRevocations(ctx, &sigilv1.WatchRevocationsRequest{Epoch: secret, AfterRevision: 1})
			if err != nil {
				return nil, err
			}
			return s.Recv()
		}},
	)
	for _, who := range []struct{ name, cred string }{{"operator", opToken}, {"manager", mgr}, {"the token itself", secret}} {
		for _, c := range calls {
			resp, err := c.do(withCred(who.cred))
			check(t, who.name+": "+c.name, resp, err)
		}
	}
	// The token as an unknown or malformed credential.
	for _, cred := range []string{secret + "x", body, secret[:len(secret)-4] + "AAAA"} {
		resp, err := e.client.ListPermissions(withCred(cred), &sigilv1.ListPermissionsRequest{})
		check(t, "credential", resp, err)
	}
	if logs := e.logs.String(); strings.Contains(logs, secret) || strings.Contains(logs, piece) {
		t.Errorf("the token is in the logs:\n%s", logs)
	}
}

// TestGrantViolationMessage: a grant violation names the field once and the
// rule, not the value.
func TestGrantViolationMessage(t *testing.T) {
	e := newEnv(t, envOpts{})
	_, err := e.client.CreateToken(op(), &sigilv1.CreateTokenRequest{OrgId: "org-1", Name: "n", CreatedBy: "alice",
		Grants: []*sigilv1.Grant{grant([]string{"domain:renw"})}, Expiry: ttl(30 * day)})
	want := "invalid argument: grants[0].permissions[0]: unknown permission; see ListPermissions"
	if got := status.Convert(err).Message(); got != want {
		t.Fatalf("message %q, want %q", got, want)
	}
}
