package server

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/testproc"
	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/keys"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
	"github.com/sigil-auth/sigil/services/authority/internal/secrets"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	opToken    = "sigil_op_test-operator-credential-0123456789"
	watchToken = "sigil_watch_test-watch-credential-0123456789"
	// reporterToken is the reporter credential (ReportLeakedTokens only).
	reporterToken = "sigil_reporter_test-reporter-credential-0123456789"
	day           = 24 * time.Hour
)

// clock is a settable offset from the real time.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// env is one authority served in process over bufconn, on a real bbolt
// store in a temporary directory.
type env struct {
	t       testing.TB
	dir     string
	st      store.Store
	km      *keys.Manager
	srv     *Server
	gs      *grpcserver.Server
	conn    *grpc.ClientConn
	client  sigilv1.TokenAuthorityServiceClient
	clock   *clock
	logs    *testproc.Buffer
	codec   *token.Codec
	stopped bool
	lis     *bufconn.Listener
}

func (e *env) dialer() func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, _ string) (net.Conn, error) { return e.lis.DialContext(ctx) }
}

type envOpts struct {
	dev             bool
	sendTimeout     time.Duration
	checkpoint      time.Duration
	activationDelay time.Duration
	dir             string // reuse a data dir (restart)
	maxWatch        int
	limits          *grpcserver.Limits
	catalog         *scope.Catalog // nil: the built-in catalog
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.activationDelay == 0 {
		o.activationDelay = time.Hour
	}
	e := &env{t: t, dir: o.dir, clock: &clock{}, logs: &testproc.Buffer{}}
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := openTestStore(t, filepath.Join(o.dir, "sigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	sealer, err := secrets.NewSealer(bytes.Repeat([]byte{42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	e.km, err = keys.New(context.Background(), st, sealer, keys.Options{ActivationDelay: o.activationDelay, Logger: logger, Now: e.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	e.codec, err = token.NewCodec("")
	if err != nil {
		t.Fatal(err)
	}
	if o.catalog == nil {
		o.catalog = scope.Builtin()
	}
	e.srv, err = New(Options{
		Options: manage.Options{
			Store: st, Keys: e.km, Codec: e.codec, Catalog: o.catalog,
			Operator: secrets.NewCredential(opToken), Watch: secrets.NewCredential(watchToken),
			Reporter: secrets.NewCredential(reporterToken),
			Dev:      o.dev, Logger: logger, Now: e.clock.now,
		},
		MinTTL: 7 * day, MaxTTL: 365 * day, SendTimeout: o.sendTimeout, CheckpointInterval: o.checkpoint,
		MaxWatchStreams: o.maxWatch, Limits: o.limits,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.gs = grpcserver.New(grpcserver.Options{Logger: logger})
	e.gs.RegisterService(&sigilv1.TokenAuthorityService_ServiceDesc, e.srv)
	lis := bufconn.Listen(1 << 20)
	e.lis = lis
	done := make(chan struct{})
	go func() { _ = e.gs.Serve(lis); close(done) }()
	e.gs.SetServing(true)
	e.conn, err = grpc.NewClient("passthrough:///bufnet", grpc.WithContextDialer(e.dialer()),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e.client = sigilv1.NewTokenAuthorityServiceClient(e.conn)
	t.Cleanup(func() {
		e.stop()
		<-done
	})
	return e
}

// stop shuts the server down and closes the store (idempotent).
func (e *env) stop() {
	if e.stopped {
		return
	}
	e.stopped = true
	e.conn.Close()
	e.srv.Shutdown()
	e.gs.Shutdown(5 * time.Second)
	e.km.Close()
	if err := e.st.Close(); err != nil {
		e.t.Errorf("close store: %v", err)
	}
}

func withCred(cred string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+cred)
}

func op() context.Context { return withCred(opToken) }

func grant(perms []string, res ...string) *sigilv1.Grant {
	return &sigilv1.Grant{Permissions: perms, Resources: res}
}

func ttl(d time.Duration) *sigilv1.CreateTokenRequest_Ttl {
	return &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(d)}
}

// mint creates a token as the operator.
func (e *env) mint(org, name, by string, grants ...*sigilv1.Grant) *sigilv1.CreateTokenResponse {
	e.t.Helper()
	if len(grants) == 0 {
		grants = []*sigilv1.Grant{grant([]string{"domain:view"})}
	}
	resp, err := e.client.CreateToken(op(), &sigilv1.CreateTokenRequest{
		OrgId: org, Name: name, Grants: grants, Expiry: ttl(30 * day), CreatedBy: by,
	})
	if err != nil {
		e.t.Fatalf("mint %s/%s: %v", org, name, err)
	}
	return resp
}

// manager mints a token holding organization:tokens plus extra grants.
func (e *env) manager(org, name, by string, extra ...string) string {
	e.t.Helper()
	perms := append([]string{"organization:tokens"}, extra...)
	return e.mint(org, name, by, grant(perms)).GetToken()
}

// wantCode fails unless err has code c; for INVALID_ARGUMENT it also wants a
// BadRequest detail naming field.
func wantCode(t *testing.T, err error, c codes.Code, field string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != c {
		t.Fatalf("code = %v (%v), want %v", st.Code(), err, c)
	}
	if strings.Contains(st.Message(), "store: ") || strings.Contains(st.Message(), "keys: ") || strings.Contains(st.Message(), "manage: ") {
		t.Fatalf("message leaks an internal prefix: %q", st.Message())
	}
	if c != codes.InvalidArgument {
		return
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return
				}
			}
			t.Fatalf("BadRequest names %v, want %q (%v)", br.GetFieldViolations(), field, err)
		}
	}
	t.Fatalf("no BadRequest detail in %v", err)
}

// openTestStore opens the bbolt store for a test; the file must pass bbolt's
// consistency check once the test has closed it.
func openTestStore(t testing.TB, path string) (store.Store, error) {
	st, err := store.Open(path, store.Options{})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
		if err != nil {
			t.Errorf("reopen for check: %v", err)
			return
		}
		defer db.Close()
		if err := db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			return nil
		}); err != nil {
			t.Errorf("bbolt check: %v", err)
		}
	})
	return st, nil
}

func metadataCtx(kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), kv...)
}
