// Package authoritytest is a scriptable fake of the authority's revocation
// stream, served over bufconn, for the authorizer's tests; and Serve, which
// serves the authorizer's own services over bufconn the same way.
package authoritytest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
)

// Session is one WatchRevocations call: the test reads the request, sends
// messages and ends the stream.
type Session struct {
	// Req is the follower's request.
	Req *sigilv1.WatchRevocationsRequest
	// Auth is the authorization metadata the follower sent.
	Auth string
	send chan *sigilv1.WatchRevocationsResponse
	end  chan error
	fake *Fake
}

// Send sends msgs in order, failing t if the stream does not take them.
func (s *Session) Send(t testing.TB, msgs ...*sigilv1.WatchRevocationsResponse) {
	t.Helper()
	for _, m := range msgs {
		s.fake.noteSent(m)
		select {
		case s.send <- m:
		case <-time.After(5 * time.Second):
			t.Fatal("authoritytest: stream did not take a message")
		}
	}
}

// End ends the stream with err (nil ends it cleanly).
func (s *Session) End(err error) { s.end <- err }

// Fake is a TokenAuthorityService whose WatchRevocations hands every call to
// the test as a Session.
type Fake struct {
	sigilv1.UnimplementedTokenAuthorityServiceServer
	sessions chan *Session

	mu      sync.Mutex
	maxRev  uint64 // highest revision a session was handed to send
	confirm func(*sigilv1.ConfirmHistoryRequest) (*sigilv1.ConfirmHistoryResponse, error)
	probes  []*sigilv1.ConfirmHistoryRequest
}

// noteSent records the revision of a message handed to a session.
func (f *Fake) noteSent(m *sigilv1.WatchRevocationsResponse) {
	var rev uint64
	switch ev := m.GetEvent().(type) {
	case *sigilv1.WatchRevocationsResponse_SnapshotEnd:
		rev = ev.SnapshotEnd.GetRevision()
	case *sigilv1.WatchRevocationsResponse_Checkpoint:
		rev = ev.Checkpoint.GetRevision()
	case *sigilv1.WatchRevocationsResponse_TokenRevoked:
		rev = ev.TokenRevoked.GetRevision()
	case *sigilv1.WatchRevocationsResponse_KeyAdded:
		rev = ev.KeyAdded.GetRevision()
	case *sigilv1.WatchRevocationsResponse_KeyRevoked:
		rev = ev.KeyRevoked.GetRevision()
	}
	f.mu.Lock()
	f.maxRev = max(f.maxRev, rev)
	f.mu.Unlock()
}

// SetConfirm replaces how ConfirmHistory answers; nil restores the default:
// "in history", with the highest revision handed to a session so far (as
// an authority whose stream is up to date would).
func (f *Fake) SetConfirm(fn func(*sigilv1.ConfirmHistoryRequest) (*sigilv1.ConfirmHistoryResponse, error)) {
	f.mu.Lock()
	f.confirm = fn
	f.mu.Unlock()
}

// Probes returns the ConfirmHistory requests received so far.
func (f *Fake) Probes() []*sigilv1.ConfirmHistoryRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*sigilv1.ConfirmHistoryRequest(nil), f.probes...)
}

// ConfirmHistory implements sigilv1.TokenAuthorityServiceServer (see
// SetConfirm).
func (f *Fake) ConfirmHistory(_ context.Context, req *sigilv1.ConfirmHistoryRequest) (*sigilv1.ConfirmHistoryResponse, error) {
	f.mu.Lock()
	f.probes = append(f.probes, req)
	fn, rev := f.confirm, f.maxRev
	f.mu.Unlock()
	if fn != nil {
		return fn(req)
	}
	return &sigilv1.ConfirmHistoryResponse{InHistory: true, Revision: rev}, nil
}

// WatchRevocations implements sigilv1.TokenAuthorityServiceServer.
func (f *Fake) WatchRevocations(req *sigilv1.WatchRevocationsRequest, st grpc.ServerStreamingServer[sigilv1.WatchRevocationsResponse]) error {
	s := &Session{Req: req, send: make(chan *sigilv1.WatchRevocationsResponse), end: make(chan error, 1), fake: f}
	if md, ok := metadata.FromIncomingContext(st.Context()); ok {
		if v := md.Get("authorization"); len(v) == 1 {
			s.Auth = v[0]
		}
	}
	select {
	case f.sessions <- s:
	case <-st.Context().Done():
		return st.Context().Err()
	}
	for {
		select {
		case m := <-s.send:
			if err := st.Send(m); err != nil {
				return err
			}
		case err := <-s.end:
			return err
		case <-st.Context().Done():
			return st.Context().Err()
		}
	}
}

// Next returns the next stream the follower opens.
func (f *Fake) Next(t testing.TB) *Session {
	t.Helper()
	select {
	case s := <-f.sessions:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("authoritytest: no stream opened")
		return nil
	}
}

// StartTCP serves a Fake on a loopback TCP port and returns it with its
// address; it stops when the test ends.
func StartTCP(t testing.TB) (*Fake, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return StartOn(t, lis), lis.Addr().String()
}

// StartOn serves a Fake on lis (a test's own listener, for instance one
// that looks at what the client sends); it stops when the test ends.
func StartOn(t testing.TB, lis net.Listener) *Fake {
	t.Helper()
	f := &Fake{sessions: make(chan *Session, 8)}
	srv := grpc.NewServer()
	sigilv1.RegisterTokenAuthorityServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

// Start serves a Fake over bufconn and returns it with a client connection
// to it; both are closed when the test ends.
func Start(t testing.TB) (*Fake, *grpc.ClientConn) {
	t.Helper()
	f := &Fake{sessions: make(chan *Session, 8)}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	sigilv1.RegisterTokenAuthorityServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	conn := dial(t, lis)
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
	})
	return f, conn
}

// Serve serves srv (the services the test registered on it) over bufconn
// and returns a client connection to it. When the test ends, the connection
// is closed and srv shut down (gracefully, for at most a second).
func Serve(t testing.TB, srv *grpcserver.Server) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	served := make(chan struct{})
	go func() { _ = srv.Serve(lis); close(served) }()
	conn := dial(t, lis)
	t.Cleanup(func() {
		conn.Close()
		srv.Shutdown(time.Second)
		<-served
	})
	return conn
}

// dial returns a plaintext client connection to lis.
func dial(t testing.TB, lis *bufconn.Listener) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// Key returns a signing key message.
func Key(id string, state sigilv1.SigningKeyState, pub []byte) *sigilv1.SigningKey {
	return &sigilv1.SigningKey{KeyId: id, State: state, PublicKey: pub}
}

// Revoked returns a revoked-token entry.
func Revoked(rev uint64, id token.ID, exp time.Time) *sigilv1.TokenRevoked {
	return &sigilv1.TokenRevoked{Revision: rev, TokenId: id.String(), ExpiresAt: timestamppb.New(exp)}
}

// Chunk returns a snapshot chunk.
func Chunk(epoch string, rev uint64, keys []*sigilv1.SigningKey, revoked ...*sigilv1.TokenRevoked) *sigilv1.WatchRevocationsResponse {
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_SnapshotChunk{SnapshotChunk: &sigilv1.SnapshotChunk{Epoch: epoch, Revision: rev, Keys: keys, RevokedTokens: revoked}}}
}

// SnapshotEnd returns a snapshot end marker carrying Digest(epoch, rev), as
// a current authority's does.
func SnapshotEnd(epoch string, rev uint64) *sigilv1.WatchRevocationsResponse {
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_SnapshotEnd{SnapshotEnd: &sigilv1.SnapshotEnd{Epoch: epoch, Revision: rev, Digest: Digest("", rev)}}}
}

// Digest is the fake's history digest at rev: any 32 bytes that differ by
// revision and by history (a test names a history to make another one).
func Digest(history string, rev uint64) []byte {
	d := sha256.Sum256(fmt.Appendf(nil, "authoritytest %q %d", history, rev))
	return d[:]
}

// TokenRevoked returns a live token revocation.
func TokenRevoked(rev uint64, id token.ID, exp time.Time) *sigilv1.WatchRevocationsResponse {
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_TokenRevoked{TokenRevoked: Revoked(rev, id, exp)}}
}

// KeyAdded returns a live key announcement.
func KeyAdded(rev uint64, k *sigilv1.SigningKey) *sigilv1.WatchRevocationsResponse {
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_KeyAdded{KeyAdded: &sigilv1.SigningKeyAdded{Revision: rev, Key: k}}}
}

// KeyRevoked returns a live key revocation.
func KeyRevoked(rev uint64, id string) *sigilv1.WatchRevocationsResponse {
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_KeyRevoked{KeyRevoked: &sigilv1.SigningKeyRevoked{Revision: rev, KeyId: id}}}
}

// Checkpoint returns a checkpoint at rev carrying Digest("", rev), as a
// current authority's does.
func Checkpoint(rev uint64, now time.Time) *sigilv1.WatchRevocationsResponse {
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_Checkpoint{Checkpoint: &sigilv1.Checkpoint{Revision: rev, AuthorityTime: timestamppb.New(now), Digest: Digest("", rev)}}}
}

// Clock is a settable clock for the follower and the decider under test, so
// that staleness and token times move only when the test says.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// SnapshotEndDigest returns a snapshot end marker carrying the history
// digest d at rev.
func SnapshotEndDigest(epoch string, rev uint64, d []byte) *sigilv1.WatchRevocationsResponse {
	m := SnapshotEnd(epoch, rev)
	m.GetSnapshotEnd().Digest = d
	return m
}

// CheckpointDigest returns a checkpoint at rev carrying the history digest
// d at rev.
func CheckpointDigest(rev uint64, now time.Time, d []byte) *sigilv1.WatchRevocationsResponse {
	m := Checkpoint(rev, now)
	m.GetCheckpoint().Digest = d
	return m
}

// Catalog returns a permission catalog message naming perms, each with a
// description and no implication.
func Catalog(perms ...string) *sigilv1.WatchRevocationsResponse {
	pc := &sigilv1.PermissionCatalog{}
	for _, p := range perms {
		product, _, _ := strings.Cut(p, ":")
		pc.Permissions = append(pc.Permissions, &sigilv1.Permission{Name: p, Product: product, Description: "test permission " + p})
	}
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_Catalog{Catalog: pc}}
}

// BuiltinCatalog returns the catalog message of scope.Builtin, as an
// authority without a catalog file streams it.
func BuiltinCatalog() *sigilv1.WatchRevocationsResponse {
	pc := &sigilv1.PermissionCatalog{}
	for _, p := range scope.Builtin().Permissions() {
		pc.Permissions = append(pc.Permissions, &sigilv1.Permission{Name: p.Name, Product: p.Product, Description: p.Description, Implies: p.Implies})
	}
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_Catalog{Catalog: pc}}
}
