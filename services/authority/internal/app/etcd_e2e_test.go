package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/etcdtest"
	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// TestEtcdStoreEndToEnd runs the real authority binary with --store etcd
// against a real etcd started by the test (embedded, loopback): it mints
// and revokes, is killed (-9) and started again on the same prefix, and
// finds every token and revocation, with revisions going on from where they
// were; no bbolt file is made.
func TestEtcdStoreEndToEnd(t *testing.T) {
	endpoint := etcdtest.StartT(t)
	bin := testproc.MustBuild(t, "services/authority")
	dataDir := t.TempDir()
	addr := testproc.FreeAddr(t)
	start := func() *testproc.Proc {
		p := testproc.StartWith(t, testproc.Options{Name: "authority"}, bin,
			"--listen", addr, "--metrics-listen", "", "--data-dir", dataDir,
			"--store", "etcd", "--etcd-endpoints", endpoint, "--etcd-prefix", "/e2e/",
			"--key-activation-delay", "1500ms", "--shutdown-timeout", "5s")
		var rec struct {
			Store    string
			Revision uint64
		}
		if err := p.WaitRecord(30*time.Second, "database open", &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Store != "etcd" {
			t.Fatalf("database open record says store %q", rec.Store)
		}
		if err := p.WaitRecord(30*time.Second, "listening", nil); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := start()
	opTok, err := os.ReadFile(filepath.Join(dataDir, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mgmt := sigilv1.NewTokenAuthorityServiceClient(conn)
	call := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(opTok))), cancel
	}
	mint := func(name string) string {
		ctx, cancel := call()
		defer cancel()
		id, err := mintOnceKeyActive(ctx, mgmt, "org-a", name)
		if err != nil {
			t.Fatalf("CreateToken(%s): %v", name, err)
		}
		return id
	}
	revoke := func(id string) uint64 {
		ctx, cancel := call()
		defer cancel()
		resp, err := mgmt.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "e2e"})
		if err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}
		return resp.GetRevision()
	}
	var ids []string
	for i := range 3 {
		ids = append(ids, mint(fmt.Sprint("t", i)))
	}
	rev := revoke(ids[0])

	p.Kill()
	p = start()
	defer func() { _ = p.Stop(10 * time.Second) }()

	ctx, cancel := call()
	defer cancel()
	for i, id := range ids {
		resp, err := mgmt.GetToken(ctx, &sigilv1.GetTokenRequest{TokenId: id})
		if err != nil {
			t.Fatalf("GetToken(t%d) after restart: %v", i, err)
		}
		revoked := resp.GetInfo().GetState() == sigilv1.TokenState_TOKEN_STATE_REVOKED
		if revoked != (i == 0) {
			t.Fatalf("t%d after restart: state %v", i, resp.GetInfo().GetState())
		}
	}
	if next := revoke(ids[1]); next <= rev {
		t.Fatalf("revocation after restart at revision %d, not after %d", next, rev)
	}
	if _, err := os.Stat(filepath.Join(dataDir, DBFile)); !os.IsNotExist(err) {
		t.Fatalf("a bbolt file was made with --store etcd: %v", err)
	}
}

// mintOnceKeyActive mints a token of org named name, retrying for up to
// 15 s while the authority has no active signing key yet (the first key
// becomes active after the activation delay), and returns its id.
func mintOnceKeyActive(ctx context.Context, mgmt sigilv1.TokenAuthorityServiceClient, org, name string) (string, error) {
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := mgmt.CreateToken(ctx, &sigilv1.CreateTokenRequest{
			OrgId: org, Name: name, CreatedBy: "alice",
			Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
			Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(10 * 24 * time.Hour)},
		})
		if err == nil {
			return resp.GetInfo().GetTokenId(), nil
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "no active signing key") {
			return "", err
		}
	}
}
