package e2e

import (
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
	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// e2eWebhookSecret is the signing secret of TestWebhooks (the Standard
// Webhooks library's own example secret).
const e2eWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// hookEvent is what the receiver keeps of an event.
type hookEvent struct {
	Type string `json:"type"`
	Data struct {
		TokenID      string `json:"token_id"`
		NewTokenID   string `json:"new_token_id"`
		OrgID        string `json:"org_id"`
		Name         string `json:"name"`
		CreatedBy    string `json:"created_by"`
		Reason       string `json:"reason"`
		KeyID        string `json:"key_id"`
		CascadeCount *int64 `json:"cascade_count"`
		LeadSeconds  *int64 `json:"lead_seconds"`
		ExpireTime   string `json:"expire_time"`
	} `json:"data"`
}

// hookReceiver is the endpoint of TestWebhooks: it verifies every request
// with the Standard Webhooks library, answers the first three with 503,
// holds the fourth (the first it accepts) until the test has killed the
// authority, and keeps the events by webhook-id (a receiver must dedupe:
// delivery is at least once).
type hookReceiver struct {
	t        *testing.T
	wh       *standardwebhooks.Webhook
	mu       sync.Mutex
	requests int
	byID     map[string]hookEvent
	times    map[string]int // requests per webhook-id
	heldID   string
	held     chan struct{} // closed when the fourth request arrives
	release  chan struct{} // closed by the test once the authority is dead
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if err := r.wh.Verify(body, req.Header); err != nil {
		r.t.Errorf("webhook %q: signature does not verify: %v", req.Header.Get("webhook-id"), err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev hookEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		r.t.Errorf("webhook payload %s: %v", body, err)
	}
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	r.requests++
	n := r.requests
	if n <= 3 {
		r.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	r.byID[id] = ev // processed: a receiver acts on the first copy
	r.times[id]++
	if n == 4 {
		r.heldID = id
		close(r.held)
	}
	r.mu.Unlock()
	if n == 4 {
		select { // the authority is killed while this request is in flight
		case <-r.release:
		case <-time.After(60 * time.Second):
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// find returns the webhook-ids of events of type typ about token id.
func (r *hookReceiver) find(typ, tokenID string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for id, ev := range r.byID {
		if ev.Type == typ && ev.Data.TokenID == tokenID {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestWebhooks: with --webhook-url, every change reaches a receiver as a
// signed Standard Webhooks request (verified with the library), exactly
// one event each (deduplicated by webhook-id), although the receiver
// refuses the first attempts and the authority is killed -9 while a
// delivery is in flight: the outbox survives, and the event in flight is
// sent again with the same webhook-id. A token reported leaked makes a
// token.leaked event; an expiry notice fires for a token that expires
// within the --expiry-notice lead time.
func TestWebhooks(t *testing.T) {
	wh, err := standardwebhooks.NewWebhook(e2eWebhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	rcv := &hookReceiver{t: t, wh: wh, byID: map[string]hookEvent{}, times: map[string]int{},
		held: make(chan struct{}), release: make(chan struct{})}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	defer func() {
		select {
		case <-rcv.release:
		default:
			close(rcv.release)
		}
	}()

	secretFile := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(secretFile, []byte(e2eWebhookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := []string{"--listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir", dir, "--shutdown-timeout", "5s",
		"--min-ttl", "1m", "--expiry-notice", "60s",
		"--webhook-url", srv.URL + "/hooks/sigil", "--webhook-secret-file", secretFile}
	start := func() *pairAuthority {
		p, addr, conn := grpcProc(t, "authority", bin(t, "authority"), args...)
		return &pairAuthority{proc: p, addr: addr, dataDir: dir, client: sigilv1.NewTokenAuthorityServiceClient(conn)}
	}
	a := start()

	var leakedSecret string
	mint := func(name string, ttl time.Duration) string {
		t.Helper()
		resp, err := a.client.CreateToken(a.operator(t), &sigilv1.CreateTokenRequest{
			OrgId: "acme", Name: name, CreatedBy: "alice",
			Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
			Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(ttl)},
		})
		if err != nil {
			t.Fatalf("CreateToken(%s): %v", name, err)
		}
		if name == "leaked" {
			leakedSecret = resp.GetToken()
		}
		return resp.GetInfo().GetTokenId()
	}
	// Expires in 70s: the 60s notice is due 10s after it is minted.
	expiring := mint("expiring", 70*time.Second)
	kept := mint("kept", 24*time.Hour)
	gone := mint("gone", 24*time.Hour)
	old := mint("rotated", 24*time.Hour)
	rot, err := a.client.RotateToken(a.operator(t), &sigilv1.RotateTokenRequest{
		TokenId: old, Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: durationpb.New(24 * time.Hour)},
	})
	if err != nil {
		t.Fatalf("RotateToken: %v", err)
	}
	if _, err := a.client.RevokeToken(a.operator(t), &sigilv1.RevokeTokenRequest{TokenId: gone, Reason: "e2e webhook"}); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	leaked := mint("leaked", 24*time.Hour)
	rep, err := a.client.ReportLeakedTokens(a.operator(t), &sigilv1.ReportLeakedTokensRequest{Tokens: []string{leakedSecret}, Source: "e2e scanner"})
	if err != nil || len(rep.GetResults()) != 1 || rep.GetResults()[0].GetOutcome() != sigilv1.LeakOutcome_LEAK_OUTCOME_REVOKED {
		t.Fatalf("ReportLeakedTokens = %v, %v", rep, err)
	}

	// Kill the authority while the first accepted delivery is in flight:
	// the receiver has the event, the authority never got the answer.
	select {
	case <-rcv.held:
	case <-time.After(60 * time.Second):
		t.Fatal("no webhook delivery within 60s")
	}
	a.proc.Kill()
	close(rcv.release)
	a = start()

	type want struct{ typ, token string }
	wants := []want{
		{"token.created", expiring}, {"token.created", kept}, {"token.created", gone}, {"token.created", old},
		{"token.rotated", old}, {"token.revoked", gone}, {"token.expiring", expiring},
		{"token.created", leaked}, {"token.leaked", leaked},
	}
	deadline := time.Now().Add(90 * time.Second)
	for _, w := range wants {
		for len(rcv.find(w.typ, w.token)) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no %s event for token %s within 90s", w.typ, w.token)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The in-flight event came again, with the same webhook-id.
	for rcv.timesOf(rcv.heldID) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the event in flight at the kill (%s) was not sent again", rcv.heldID)
		}
		time.Sleep(100 * time.Millisecond)
	}

	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	seen := map[want]string{}
	keyEvents := 0
	for id, ev := range rcv.byID {
		if ev.Type == "key.rotated" {
			keyEvents++
			continue
		}
		k := want{ev.Type, ev.Data.TokenID}
		if prev, dup := seen[k]; dup {
			t.Errorf("%s for token %s came under two webhook-ids (%s, %s): one change, two events", k.typ, k.token, prev, id)
		}
		seen[k] = id
		if ev.Data.OrgID != "acme" || ev.Data.CreatedBy != "alice" {
			t.Errorf("event %s: %+v", id, ev)
		}
		switch ev.Type {
		case "token.rotated":
			if ev.Data.NewTokenID != rot.GetInfo().GetTokenId() {
				t.Errorf("token.rotated names %q, want the new token %s", ev.Data.NewTokenID, rot.GetInfo().GetTokenId())
			}
		case "token.revoked":
			if ev.Data.CascadeCount == nil || *ev.Data.CascadeCount != 0 || ev.Data.Reason != "e2e webhook" {
				t.Errorf("token.revoked %+v", ev.Data)
			}
		case "token.leaked":
			if ev.Data.CascadeCount == nil || *ev.Data.CascadeCount != 0 || !strings.Contains(ev.Data.Reason, "e2e scanner") {
				t.Errorf("token.leaked %+v", ev.Data)
			}
		case "token.expiring":
			if ev.Data.LeadSeconds == nil || *ev.Data.LeadSeconds != 60 || ev.Data.ExpireTime == "" {
				t.Errorf("token.expiring %+v", ev.Data)
			}
		}
	}
	if keyEvents == 0 {
		t.Error("no key.rotated event for the signing key made at the first start")
	}
	if len(seen) != len(wants) {
		t.Errorf("token events %v, want exactly %v", seen, wants)
	}
	t.Logf("%d requests, %d distinct events; the in-flight event %s came %d times", rcv.requests, len(rcv.byID), rcv.heldID, rcv.times[rcv.heldID])
}

func (r *hookReceiver) timesOf(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.times[id]
}
