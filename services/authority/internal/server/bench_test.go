package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// BenchmarkSnapshot100k measures the revocation stream's snapshot of 100,000
// revoked tokens over bufconn: time from the request to SnapshotEnd, and the
// bytes and chunks sent.
func BenchmarkSnapshot100k(b *testing.B) {
	const n = 100_000
	e := newEnv(b, envOpts{})
	ctx := context.Background()
	now := time.Now()
	// Fill the store directly, concurrently (group commit).
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 64 {
				id, _ := token.NewID()
				keyID, _, _ := e.km.Signer()
				_, err := e.st.CreateToken(ctx, store.Token{
					ID: id.String(), OrgID: "bench", Name: fmt.Sprint("t", i), CreatedBy: "bench", KeyID: keyID,
					Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}, CreateTime: now, ExpireTime: now.Add(30 * day),
				}, store.AuditRecord{Time: now, Actor: "operator", OrgID: "bench", Action: store.AuditTokenCreated})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	if cnt, _, err := e.st.RevokeTokens(ctx, "bench", "", store.AuditRecord{Time: now, Actor: "operator", OrgID: "bench", Action: store.AuditTokensRevoked}); err != nil || cnt != n {
		b.Fatalf("revoke: %d %v", cnt, err)
	}
	b.ResetTimer()
	var bytes, chunks int
	for range b.N {
		bytes, chunks = 0, 0
		sctx, cancel := context.WithCancel(withCred(watchToken))
		s := e.watch(sctx, 0, "")
		for {
			m, err := s.Recv()
			if err != nil {
				b.Fatal(err)
			}
			bytes += proto.Size(m)
			if c := m.GetSnapshotChunk(); c != nil {
				chunks++
			}
			if m.GetSnapshotEnd() != nil {
				break
			}
		}
		cancel()
	}
	b.ReportMetric(float64(bytes), "snapshot-bytes")
	b.ReportMetric(float64(chunks), "chunks")
}
