package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.uber.org/goleak"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// delivery is one request the receiver got.
type delivery struct {
	id, typ string
	status  int
	payload Payload
}

// receiver is a real HTTP endpoint on loopback that verifies every
// request's signature with the Standard Webhooks library and answers the
// first `fail` requests with 503.
type receiver struct {
	t    *testing.T
	wh   *standardwebhooks.Webhook
	srv  *httptest.Server
	mu   sync.Mutex
	fail int
	got  []delivery
}

func newReceiver(t *testing.T, fail int) *receiver {
	wh, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, wh: wh, fail: fail}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		r.t.Errorf("reading a request: %v", err)
		return
	}
	if err := r.wh.Verify(body, req.Header); err != nil {
		r.t.Errorf("signature of %s does not verify: %v", req.Header.Get("webhook-id"), err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil {
		r.t.Errorf("payload %s: %v", body, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	d := delivery{id: req.Header.Get("webhook-id"), typ: p.Type, status: http.StatusNoContent, payload: p}
	if r.fail > 0 {
		r.fail--
		d.status = http.StatusServiceUnavailable
	}
	r.got = append(r.got, d)
	w.WriteHeader(d.status)
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// delivered returns the ids answered 2xx, in order.
func (r *receiver) delivered() []string {
	var ids []string
	for _, d := range r.deliveries() {
		if d.status < 300 {
			ids = append(ids, d.id)
		}
	}
	return ids
}

var t0 = time.Now().UTC().Truncate(time.Second)

// openStore opens a bbolt store with the outbox on and a signing key.
func openStore(t *testing.T) store.Store {
	t.Helper()
	return openStoreAt(t, t0)
}

// openStoreAt is openStore with the key added at keyTime.
func openStoreAt(t *testing.T, keyTime time.Time) store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), "sigil.db"), store.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.SetOutbox(true)
	if _, err := s.AddKey(context.Background(), store.Key{ID: "k1", State: store.KeyActive, Public: bytes.Repeat([]byte{1}, 32), CreateTime: keyTime},
		store.AuditRecord{Time: keyTime, Actor: "operator", Action: store.AuditKeyRotated}); err != nil {
		t.Fatal(err)
	}
	return s
}

var tokSeq int

func createToken(t *testing.T, s store.Store, at time.Time, ttl time.Duration) store.Token {
	t.Helper()
	tokSeq++
	tk := store.Token{
		ID: fmt.Sprintf("%032x", tokSeq), OrgID: "o", Name: fmt.Sprint("t", tokSeq), CreatedBy: "alice", KeyID: "k1",
		Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}, CreateTime: at, ExpireTime: at.Add(ttl),
	}
	if _, err := s.CreateToken(context.Background(), tk, store.AuditRecord{Time: at, Actor: "operator", Action: store.AuditTokenCreated}); err != nil {
		t.Fatal(err)
	}
	return tk
}

// startSender runs a Sender until the test ends.
func startSender(t *testing.T, opts Options) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	if opts.Signer == nil {
		signer, err := ParseSecret(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		opts.Signer = signer
	}
	snd, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); snd.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return reg
}

// waitFor polls cond until it holds, failing the test after a generous
// bound (a hang, not a speed check).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// TestDeliversSignedEventsInOrder: every event reaches the endpoint once,
// in order, signed (the receiver verifies with the Standard Webhooks
// library), with its payload; the outbox empties.
func TestDeliversSignedEventsInOrder(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	a := createToken(t, s, t0, time.Hour)
	if _, _, _, err := s.RevokeToken(ctx, a.ID, store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditTokenRevoked, Reason: "lost"}); err != nil {
		t.Fatal(err)
	}
	want, err := s.ListOutbox(ctx, store.OutboxFilter{})
	if err != nil || len(want) != 3 {
		t.Fatalf("outbox %+v, %v", want, err)
	}
	rcv := newReceiver(t, 0)
	reg := startSender(t, Options{URL: rcv.srv.URL + "/hook?x=1", Store: s})
	waitFor(t, "3 deliveries", func() bool { return len(rcv.delivered()) == 3 })
	b := createToken(t, s, t0, time.Hour) // wakes the sender (Changed)
	waitFor(t, "the 4th delivery", func() bool { return len(rcv.delivered()) == 4 })

	got := rcv.deliveries()
	for i, e := range want {
		if got[i].id != e.ID || got[i].typ != e.Type {
			t.Fatalf("delivery %d: %s %s, want %s %s", i, got[i].id, got[i].typ, e.ID, e.Type)
		}
	}
	if d := got[3].payload; d.Type != store.WebhookTokenCreated || d.Data.TokenID != b.ID || d.Data.CreatedBy != "alice" || d.Data.OrgID != "o" ||
		d.Data.ExpireTime == nil || !d.Data.ExpireTime.Equal(b.ExpireTime) || !d.Timestamp.Equal(t0) {
		t.Errorf("token.created payload %+v", d)
	}
	if d := got[2].payload.Data; d.TokenID != a.ID || d.CascadeCount == nil || *d.CascadeCount != 0 || d.Reason != "lost" || d.RevokeTime == nil {
		t.Errorf("token.revoked payload %+v", d)
	}
	waitFor(t, "an empty outbox", func() bool {
		p, _, err := s.OutboxCounts(ctx)
		return err == nil && p == 0
	})
	waitFor(t, "delivered_total 4", func() bool { return counter(t, reg, "sigil_authority_webhook_delivered_total") == 4 })
	if n := counter(t, reg, "sigil_authority_webhook_attempts_total"); n != 4 {
		t.Errorf("attempts_total = %v, want 4", n)
	}
}

// TestRetriesUntilDelivered: an endpoint answering 503 gets the same event
// (same webhook-id, a fresh signature) again after a backoff until it
// answers 2xx; the attempts are recorded; nothing is lost or reordered.
func TestRetriesUntilDelivered(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	createToken(t, s, t0, time.Hour)
	want, err := s.ListOutbox(ctx, store.OutboxFilter{})
	if err != nil || len(want) != 2 {
		t.Fatalf("outbox %+v, %v", want, err)
	}
	rcv := newReceiver(t, 3)
	reg := startSender(t, Options{URL: rcv.srv.URL, Store: s, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	waitFor(t, "2 deliveries", func() bool { return len(rcv.delivered()) == 2 })
	got := rcv.deliveries()
	if len(got) != 5 {
		t.Fatalf("%d requests, want 3 failed and 2 delivered: %+v", len(got), got)
	}
	var firstID int
	for _, d := range got[:4] {
		if d.id == want[0].ID {
			firstID++
		}
	}
	if firstID != 4 || got[3].status >= 300 || got[4].id != want[1].ID {
		t.Fatalf("requests %+v: want the first event 3 times refused then delivered, then the second", got)
	}
	if n := counter(t, reg, "sigil_authority_webhook_attempts_total"); n != 5 {
		t.Errorf("attempts_total = %v, want 5", n)
	}
	if n := counter(t, reg, "sigil_authority_webhook_failed_total"); n != 0 {
		t.Errorf("failed_total = %v, want 0", n)
	}
}

// TestGivesUpAfterMaxAge: an event still refused after MaxAge moves to the
// failed list with its attempts and last error, is counted, and does not
// hold back the events after it.
func TestGivesUpAfterMaxAge(t *testing.T) {
	ctx := context.Background()
	s := openStoreAt(t, t0.Add(-2*time.Hour)) // key event 2h old
	old := createToken(t, s, t0.Add(-2*time.Hour), 3*time.Hour)
	young := createToken(t, s, t0, time.Hour)
	rcv := newReceiver(t, 1000)
	reg := startSender(t, Options{URL: rcv.srv.URL, Store: s, MaxAge: time.Hour, MinBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	waitFor(t, "retries of the young event", func() bool {
		p, err := s.ListOutbox(ctx, store.OutboxFilter{})
		return err == nil && len(p) == 1 && p[0].Attempts >= 2
	})
	f, err := s.ListOutbox(ctx, store.OutboxFilter{Failed: true})
	if err != nil || len(f) != 2 {
		t.Fatalf("failed list %+v, %v", f, err)
	}
	for i, want := range []string{"k1", old.ID} {
		if e := f[i]; e.KeyID != want && e.TokenID != want || e.Attempts != 1 || e.LastError != "status 503" {
			t.Fatalf("failed entry %d: %+v, want %s after one attempt", i, e, want)
		}
	}
	if p, _ := s.ListOutbox(ctx, store.OutboxFilter{}); p[0].TokenID != young.ID || p[0].LastError != "status 503" || p[0].NextAttempt.IsZero() {
		t.Fatalf("pending %+v", p[0])
	}
	waitFor(t, "failed_total 2", func() bool { return counter(t, reg, "sigil_authority_webhook_failed_total") == 2 })
}

// TestBackoffIsBoundedAndJittered: the wait doubles from MinBackoff up to
// MaxBackoff, jittered within [half, all] of it.
func TestBackoffIsBoundedAndJittered(t *testing.T) {
	snd := &Sender{opts: Options{MinBackoff: time.Second, MaxBackoff: time.Minute}}
	distinct := map[time.Duration]bool{}
	for n := 1; n <= 64; n++ {
		ceil := min(time.Second<<min(n-1, 30), time.Minute)
		for range 20 {
			d := snd.backoff(n)
			if d < ceil/2 || d > ceil {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", n, d, ceil/2, ceil)
			}
			distinct[d] = true
		}
	}
	if len(distinct) < 100 {
		t.Errorf("only %d distinct waits: no jitter?", len(distinct))
	}
}

// TestExpiryJobMakesNotices: the job's first run makes the notice due and
// puts a token.expiring event in the outbox; later runs make no other.
func TestExpiryJobMakesNotices(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	tk := createToken(t, s, t0, 10*time.Minute)
	now := func() time.Time { return tk.ExpireTime.Add(-2 * time.Minute) }
	job := &Expiry{Store: s, Leads: []time.Duration{3 * time.Minute}, Interval: 5 * time.Millisecond, Now: now}
	jctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); job.Run(jctx) }()
	var es []store.OutboxEntry
	waitFor(t, "the notice", func() bool {
		es, _ = s.ListOutbox(ctx, store.OutboxFilter{})
		return len(es) == 3
	})
	rev := es[2].Revision
	time.Sleep(50 * time.Millisecond) // several more runs
	cancel()
	<-done
	if e := es[2]; e.Type != store.WebhookTokenExpiring || e.TokenID != tk.ID || e.Lead != 3*time.Minute {
		t.Fatalf("notice %+v", e)
	}
	if s.Revision() != rev {
		t.Fatalf("later runs wrote revisions %d..%d", rev, s.Revision())
	}
	p := PayloadOf(&es[2])
	if p.Data.LeadSeconds == nil || *p.Data.LeadSeconds != 180 || p.Data.CascadeCount != nil {
		t.Errorf("token.expiring payload %+v", p.Data)
	}
}

func TestNoticeInterval(t *testing.T) {
	for _, tc := range []struct {
		leads []time.Duration
		want  time.Duration
	}{
		{[]time.Duration{168 * time.Hour, 24 * time.Hour}, time.Minute},
		{[]time.Duration{90 * time.Second}, 22500 * time.Millisecond},
		{[]time.Duration{time.Second}, time.Second},
	} {
		if got := NoticeInterval(tc.leads); got != tc.want {
			t.Errorf("NoticeInterval(%v) = %s, want %s", tc.leads, got, tc.want)
		}
	}
}

func TestParseSecret(t *testing.T) {
	key24 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 24))
	key64 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 64))
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"library example", testSecret, true},
		{"24 bytes", "whsec_" + key24, true},
		{"64 bytes", "whsec_" + key64, true},
		{"no prefix", key24, false},
		{"other prefix", "whsek_" + key24, false},
		{"23 bytes", "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 23)), false},
		{"65 bytes", "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 65)), false},
		{"url alphabet", "whsec_" + strings.Repeat("-_", 16), false},
		{"no padding", "whsec_" + strings.TrimRight(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 25)), "="), false},
		{"space", "whsec_ " + key24, false},
		{"newline inside", "whsec_" + key24[:8] + "\n" + key24[8:], false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wh, err := ParseSecret(tc.in)
			if (err == nil) != tc.ok || (err == nil) != (wh != nil) {
				t.Fatalf("ParseSecret = %v, %v; want ok %v", wh, err, tc.ok)
			}
			if err != nil && (!errors.Is(err, ErrBadSecret) || (len(tc.in) > 8 && strings.Contains(err.Error(), tc.in[6:]))) {
				t.Fatalf("error %q", err)
			}
		})
	}
}

func FuzzParseSecret(f *testing.F) {
	f.Add(testSecret)
	f.Add("whsec_")
	f.Add("whsec_====")
	f.Fuzz(func(t *testing.T, s string) {
		wh, err := ParseSecret(s)
		if err != nil {
			if !errors.Is(err, ErrBadSecret) {
				t.Fatalf("error %v", err)
			}
			return
		}
		// A secret that parses signs what the library's own parser
		// verifies.
		lib, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			t.Fatalf("accepted %q that the library refuses: %v", s, err)
		}
		sig, _ := wh.Sign("msg_1", t0, []byte("{}"))
		h := http.Header{}
		h.Set("webhook-id", "msg_1")
		h.Set("webhook-timestamp", fmt.Sprint(t0.Unix()))
		h.Set("webhook-signature", sig)
		if err := lib.VerifyIgnoringTimestamp([]byte("{}"), h); err != nil {
			t.Fatalf("signature does not verify: %v", err)
		}
	})
}

func TestLoadSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := LoadSecretFile(write("ok", testSecret+"\n", 0o600)); err != nil {
		t.Fatalf("good file: %v", err)
	}
	if _, err := LoadSecretFile(write("crlf", testSecret+"\r\n", 0o600)); err != nil {
		t.Fatalf("CRLF file: %v", err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"world writable", write("ww", testSecret, 0o666), "chmod 600"},
		{"too large", write("big", testSecret+strings.Repeat("\n", 2000), 0o600), "larger than"},
		{"two newlines", write("nn", testSecret+"\n\n", 0o600), "whsec_ followed by"},
		{"bad secret", write("bad", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", 0o600), "whsec_ followed by"},
		{"directory", dir, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadSecretFile(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("error %v, want one naming %s and saying %q", err, tc.path, tc.want)
			}
			if strings.Contains(err.Error(), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa") {
				t.Fatalf("error holds the secret: %v", err)
			}
		})
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	signer, _ := ParseSecret(testSecret)
	s := openStore(t)
	for _, u := range []string{"", "ftp://x", "http://", "localhost:80", "://x"} {
		if _, err := New(Options{URL: u, Signer: signer, Store: s}); err == nil {
			t.Errorf("URL %q accepted", u)
		}
	}
	if _, err := New(Options{URL: "https://x", Store: s}); err == nil {
		t.Error("no signer accepted")
	}
}
