package testproc

import (
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Listening waits up to timeout for the service's `"msg":"listening"` log
// record (both Sigil binaries and internal/refserver write one once they
// accept calls), dials it in plaintext, closes that connection when the
// test ends and returns the address and the connection. It fails the test
// if the process exits or stays silent.
func (p *Proc) Listening(tb testing.TB, timeout time.Duration) (string, *grpc.ClientConn) {
	tb.Helper()
	var rec struct{ Addr string }
	if err := p.WaitRecord(timeout, "listening", &rec); err != nil {
		tb.Fatal(err)
	}
	conn, err := grpc.NewClient(rec.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return rec.Addr, conn
}
