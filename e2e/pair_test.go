package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// pairAuthority is a running authority started by startPairAuthority.
type pairAuthority struct {
	proc    *testproc.Proc
	addr    string
	dataDir string
	client  sigilv1.TokenAuthorityServiceClient
}

// grpcProc starts bin with args, waits for its "listening" record and
// returns the process, its address and a client connection.
func grpcProc(t *testing.T, name, bin string, args ...string) (*testproc.Proc, string, *grpc.ClientConn) {
	t.Helper()
	p := testproc.StartWith(t, testproc.Options{Name: name}, bin, args...)
	addr, conn := p.Listening(t, 60*time.Second)
	return p, addr, conn
}

func startPairAuthority(t *testing.T) *pairAuthority {
	t.Helper()
	dir := t.TempDir()
	p, addr, conn := grpcProc(t, "authority", bin(t, "authority"), "--listen", "127.0.0.1:0", "--metrics-listen", "",
		"--data-dir", dir, "--shutdown-timeout", "5s")
	return &pairAuthority{proc: p, addr: addr, dataDir: dir, client: sigilv1.NewTokenAuthorityServiceClient(conn)}
}

func (a *pairAuthority) operator(t *testing.T) context.Context {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.dataDir, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(b)))
}

var mintSeq atomic.Int64

// mint creates a token in org with one grant.
func (a *pairAuthority) mint(t *testing.T, org string, perms []string, resources ...string) (tok, id string) {
	t.Helper()
	resp, err := a.client.CreateToken(a.operator(t), &sigilv1.CreateTokenRequest{
		OrgId: org, Name: fmt.Sprintf("e2e-product-%d", mintSeq.Add(1)), CreatedBy: "alice",
		Grants: []*sigilv1.Grant{{Permissions: perms, Resources: resources}},
		Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(7 * 24 * time.Hour)},
	})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return resp.GetToken(), resp.GetInfo().GetTokenId()
}

// revoke revokes a token and returns the revision of the revocation.
func (a *pairAuthority) revoke(t *testing.T, id string) uint64 {
	t.Helper()
	resp, err := a.client.RevokeToken(a.operator(t), &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "e2e"})
	if err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	return resp.GetRevision()
}

// pairAuthorizer is a running authorizer.
type pairAuthorizer struct {
	proc     *testproc.Proc
	addr     string
	httpAddr string // forward-auth, when started with --http-listen
}

// startPairAuthorizer starts an authorizer following a and waits until it
// is SERVING (synced).
func startPairAuthorizer(t *testing.T, a *pairAuthority, extra ...string) *pairAuthorizer {
	t.Helper()
	args := append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "", "--authority", a.addr,
		"--authority-token-file", filepath.Join(a.dataDir, "watch.token"), "--max-staleness", "2s", "--shutdown-timeout", "5s"}, extra...)
	p, addr, _ := grpcProc(t, "authorizer", bin(t, "authorizer"), args...)
	z := &pairAuthorizer{proc: p, addr: addr}
	if err := testproc.WaitServing(addr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, arg := range extra {
		if arg == "--http-listen" {
			var rec struct{ Addr string }
			if err := p.WaitRecord(10*time.Second, "forward-auth listening", &rec); err != nil {
				t.Fatal(err)
			}
			z.httpAddr = rec.Addr
		}
	}
	return z
}
