package app

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/etcdtest"
	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// replicaHookSecret signs the webhooks of TestWebhookReplicaLoss (the
// Standard Webhooks library's own example secret).
const replicaHookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// replicaHookEvent is what the receiver keeps of an event.
type replicaHookEvent struct {
	Type string `json:"type"`
	Data struct {
		TokenID    string `json:"token_id"`
		NewTokenID string `json:"new_token_id"`
	} `json:"data"`
}

// replicaHookReceiver verifies every request with the Standard Webhooks
// library, refuses (500) every delivery until accept is set, and keeps the
// accepted events by webhook-id (delivery is at least once: a receiver
// dedupes).
type replicaHookReceiver struct {
	t        *testing.T
	wh       *standardwebhooks.Webhook
	mu       sync.Mutex
	accept   bool
	refused  int
	accepted int
	byID     map[string]replicaHookEvent
}

func (r *replicaHookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := req.Header.Get(standardwebhooks.HeaderWebhookID)
	if err := r.wh.Verify(body, req.Header); err != nil {
		r.t.Errorf("webhook %q: signature does not verify: %v", id, err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev replicaHookEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		r.t.Errorf("webhook %q: payload %s: %v", id, body, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.accept {
		r.refused++
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	r.accepted++
	r.byID[id] = ev
	w.WriteHeader(http.StatusNoContent)
}

// state returns the refused count and the distinct (type, token id) pairs
// of the accepted events other than key events, with the webhook-ids of
// each.
func (r *replicaHookReceiver) state() (refused int, tokenEvents map[[2]string][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tokenEvents = map[[2]string][]string{}
	for id, ev := range r.byID {
		if strings.HasPrefix(ev.Type, "key.") {
			continue
		}
		k := [2]string{ev.Type, ev.Data.TokenID}
		tokenEvents[k] = append(tokenEvents[k], id)
	}
	return r.refused, tokenEvents
}

// TestWebhookReplicaLoss runs two real authority binaries on one etcd
// prefix (embedded etcd, loopback), both with the same webhook endpoint
// and secret and a 2 s leader lease. Tokens are minted, rotated and
// revoked through the replica that does not lead, while the receiver
// refuses every delivery: the events stay in the outbox, which lives in
// etcd. The leader (the only one delivering) is killed -9; then the
// receiver accepts, the other replica takes over and delivers every event
// (deduplicated by webhook-id: exactly the expected set, none missing),
// each signature verified with the Standard Webhooks library.
func TestWebhookReplicaLoss(t *testing.T) {
	wh, err := standardwebhooks.NewWebhook(replicaHookSecret)
	if err != nil {
		t.Fatal(err)
	}
	rcv := &replicaHookReceiver{t: t, wh: wh, byID: map[string]replicaHookEvent{}}
	hooks := httptest.NewServer(rcv)
	defer hooks.Close()

	etcdEndpoint := etcdtest.StartT(t)
	bin := testproc.MustBuild(t, "services/authority")
	shared := t.TempDir()
	secretFile := filepath.Join(shared, "webhook.secret")
	if err := os.WriteFile(secretFile, []byte(replicaHookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(name string) *replicaProc {
		return startReplicaProc(t, bin, name, shared, "--store", "etcd", "--etcd-endpoints", etcdEndpoint,
			"--etcd-prefix", "/e2e-webhook-replicas/", "--etcd-leader-ttl", "2s", "--key-activation-delay", "1500ms",
			"--webhook-url", hooks.URL+"/hooks/sigil", "--webhook-secret-file", secretFile)
	}
	a := start("a")
	defer func() { _ = a.p.Stop(10 * time.Second) }()
	b := start("b")
	defer func() { _ = b.p.Stop(10 * time.Second) }()

	lead, other := waitLeader(t, a, b)
	if err := lead.p.WaitRecord(5*time.Second, "webhook delivery started", nil); err != nil {
		t.Fatalf("leader's log: %v", err)
	}

	// Every change goes through the replica that does not lead.
	opTok, err := os.ReadFile(filepath.Join(shared, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(other.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
		t.Helper()
		ctx, cancel := call()
		defer cancel()
		id, err := mintOnceKeyActive(ctx, mgmt, "acme", name)
		if err != nil {
			t.Fatalf("CreateToken(%s) on %s: %v", name, other.name, err)
		}
		return id
	}
	kept, gone, old := mint("kept"), mint("gone"), mint("rotated")
	ctx, cancel := call()
	defer cancel()
	rot, err := mgmt.RotateToken(ctx, &sigilv1.RotateTokenRequest{
		TokenId: old, Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: durationpb.New(10 * 24 * time.Hour)},
	})
	if err != nil {
		t.Fatalf("RotateToken on %s: %v", other.name, err)
	}
	if _, err := mgmt.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: gone, Reason: "e2e replica loss"}); err != nil {
		t.Fatalf("RevokeToken on %s: %v", other.name, err)
	}
	type event = [2]string
	want := map[event]bool{
		{"token.created", kept}: true, {"token.created", gone}: true, {"token.created", old}: true,
		{"token.rotated", old}: true, {"token.revoked", gone}: true,
	}

	// The leader is delivering, and being refused, before it dies: at
	// least twice, once after every change above was made.
	atChanges, _ := rcv.state()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if refused, _ := rcv.state(); refused >= max(2, atChanges+1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the leader made no delivery attempt within 20s of the changes")
		}
	}
	killed := time.Now()
	lead.p.Kill()
	rcv.mu.Lock()
	rcv.accept = true // from now on: only the survivor can be delivering
	refusedBefore := rcv.refused
	rcv.mu.Unlock()

	for deadline := killed.Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, got := rcv.state()
		missing := 0
		for e := range want {
			if len(got[e]) == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d token events not delivered within 30s of the leader's kill; got %v", missing, len(want), got)
		}
	}
	t.Logf("%s delivered every event %v after the leader %s was killed (lease 2s; %d attempts refused before)",
		other.name, time.Since(killed).Round(10*time.Millisecond), lead.name, refusedBefore)

	if !other.leads(t) {
		t.Errorf("%s delivered but does not lead", other.name)
	}
	if err := other.p.WaitRecord(time.Second, "webhook delivery started", nil); err != nil {
		t.Errorf("%s's log: %v", other.name, err)
	}
	_, got := rcv.state()
	for e, ids := range got {
		if !want[e] {
			t.Errorf("unexpected event %s for token %s (webhook-ids %v)", e[0], e[1], ids)
		}
		if len(ids) > 1 {
			t.Errorf("%s for token %s came under %d webhook-ids %v: one change, several events", e[0], e[1], len(ids), ids)
		}
	}
	rcv.mu.Lock()
	accepted, distinct := rcv.accepted, len(rcv.byID)
	for id, ev := range rcv.byID {
		if ev.Type == "token.rotated" && ev.Data.NewTokenID != rot.GetInfo().GetTokenId() {
			t.Errorf("token.rotated %s names %q, want the new token %s", id, ev.Data.NewTokenID, rot.GetInfo().GetTokenId())
		}
	}
	rcv.mu.Unlock()
	if d := scrape(t, other.metrics, "sigil_authority_webhook_delivered_total"); int(d) < len(want) {
		t.Errorf("%s counts %v deliveries, want at least %d", other.name, d, len(want))
	}
	t.Logf("%d requests accepted, %d distinct events (key events included)", accepted, distinct)
}
