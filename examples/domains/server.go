package main

import (
	"context"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/pkg/authz"
	domainsv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/examples/domains/v1"
)

// seed is every organization's portfolio at start, in memory.
var seed = map[string]int32{"example.com": 1, "example.org": 2, "example.net": 3}

// server is the domains API. It trusts pkg/authz for who may call: each
// handler only acts in the organization of the caller's token.
type server struct {
	domainsv1.UnimplementedDomainServiceServer
	mu   sync.Mutex
	orgs map[string]map[string]int32 // org → fqdn → years
}

func newServer() *server { return &server{orgs: map[string]map[string]int32{}} }

// portfolio returns org's domains (seeded on first use); s.mu held.
func (s *server) portfolio(org string) map[string]int32 {
	p, ok := s.orgs[org]
	if !ok {
		p = map[string]int32{}
		for k, v := range seed {
			p[k] = v
		}
		s.orgs[org] = p
	}
	return p
}

func (s *server) ListDomains(ctx context.Context, _ *domainsv1.ListDomainsRequest) (*domainsv1.ListDomainsResponse, error) {
	org := authz.OrgID(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &domainsv1.ListDomainsResponse{OrgId: org}
	p := s.portfolio(org)
	names := make([]string, 0, len(p))
	for k := range p {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, n := range names {
		resp.Domains = append(resp.Domains, &domainsv1.Domain{Fqdn: n, Years: p[n]})
	}
	return resp, nil
}

func (s *server) GetDomain(ctx context.Context, req *domainsv1.GetDomainRequest) (*domainsv1.GetDomainResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	y, ok := s.portfolio(authz.OrgID(ctx))[req.GetFqdn()]
	if !ok {
		return nil, status.Error(codes.NotFound, "fqdn: no such domain in the organization")
	}
	return &domainsv1.GetDomainResponse{Domain: &domainsv1.Domain{Fqdn: req.GetFqdn(), Years: y}}, nil
}

func (s *server) RenewDomain(ctx context.Context, req *domainsv1.RenewDomainRequest) (*domainsv1.RenewDomainResponse, error) {
	if y := req.GetYears(); y < 1 || y > 10 {
		return nil, status.Error(codes.InvalidArgument, "years: must be between 1 and 10")
	}
	fqdn := req.GetDomain().GetFqdn()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.portfolio(authz.OrgID(ctx))
	y, ok := p[fqdn]
	if !ok {
		return nil, status.Error(codes.NotFound, "domain.fqdn: no such domain in the organization")
	}
	y = min(y+req.GetYears(), 10)
	p[fqdn] = y
	return &domainsv1.RenewDomainResponse{Domain: &domainsv1.Domain{Fqdn: fqdn, Years: y}, TokenId: authz.TokenID(ctx)}, nil
}

func (s *server) Ping(context.Context, *domainsv1.PingRequest) (*domainsv1.PingResponse, error) {
	return &domainsv1.PingResponse{Message: "pong"}, nil
}
