package app

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
	"github.com/sigil-auth/sigil/services/authorizer/internal/config"
	"github.com/sigil-auth/sigil/services/authorizer/internal/follower"
)

// TestAuthorityConnectionSendsNoBDPPings: the authorizer's connection to
// the authority (dialAuthority) has fixed flow-control windows, so that
// following the revocation stream makes it send no PING: with grpc-go's
// default dynamic windows every burst of the stream is answered with one,
// which an authority fanning out to many authorizers must read and
// acknowledge (BENCHMARKS.md). The control case, a connection with
// grpc-go's defaults on the same fake authority, shows the count works.
func TestAuthorityConnectionSendsNoBDPPings(t *testing.T) {
	for _, c := range []struct {
		name  string
		dial  func(t *testing.T, addr string) *grpc.ClientConn
		pings func(n int64) bool
		want  string
	}{
		{"grpc-go defaults (control)", func(t *testing.T, addr string) *grpc.ClientConn {
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			return cc
		}, func(n int64) bool { return n > 0 }, "some"},
		{"dialAuthority", func(t *testing.T, addr string) *grpc.ClientConn {
			a, err := config.ParseAuthority(addr)
			if err != nil {
				t.Fatal(err)
			}
			conns, err := dialAuthority(a, nil)
			if err != nil {
				t.Fatal(err)
			}
			return conns[0]
		}, func(n int64) bool { return n == 0 }, "none"},
	} {
		t.Run(c.name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			lis := &pingCountingListener{Listener: inner}
			fake := authoritytest.StartOn(t, lis)
			cc := c.dial(t, inner.Addr().String())
			defer cc.Close()
			fol := follower.New(follower.Options{
				Client:       sigilv1.NewTokenAuthorityServiceClient(cc),
				Credential:   func() (string, error) { return "", nil },
				MaxStaleness: time.Minute,
				Retention:    time.Minute,
				MaxClockSkew: time.Minute,
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = fol.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()

			s := fake.Next(t)
			s.Send(t, authoritytest.Chunk("e1", 5, nil), authoritytest.SnapshotEnd("e1", 5))
			wait, cancelWait := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancelWait()
			// One revocation at a time, as an authority streams them: each
			// a burst of its own.
			for rev := uint64(6); rev <= 25; rev++ {
				id, _ := token.NewID()
				s.Send(t, authoritytest.TokenRevoked(rev, id, time.Now().Add(time.Hour)))
				if err := fol.WaitApplied(wait, rev); err != nil {
					t.Fatalf("revision %d not applied: %v", rev, err)
				}
			}
			// A call after the revocations: once it is answered, the server
			// has read every frame the client sent before it, PINGs
			// included (one connection, in order). The framer counts
			// right behind; a moment is left for it.
			if _, err := sigilv1.NewTokenAuthorityServiceClient(cc).ConfirmHistory(wait, &sigilv1.ConfirmHistoryRequest{}); err != nil {
				t.Fatal(err)
			}
			n := lis.pings.Load()
			for deadline := time.Now().Add(2 * time.Second); !c.pings(n) && time.Now().Before(deadline); n = lis.pings.Load() {
				time.Sleep(10 * time.Millisecond)
			}
			if !c.pings(n) {
				t.Errorf("%d PING frames from the client for 20 revocations, want %s", n, c.want)
			}
		})
	}
}

// pingCountingListener counts the PING frames (not acknowledgements)
// its connections' clients send, by reading a copy of what they send
// through an HTTP/2 framer.
type pingCountingListener struct {
	net.Listener
	pings atomic.Int64
}

func (l *pingCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		// The client preface, then frames.
		if _, err := io.ReadFull(pr, make([]byte, len(http2.ClientPreface))); err != nil {
			return
		}
		fr := http2.NewFramer(nil, pr)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				_ = pr.CloseWithError(err) // the copy is no longer read
				return
			}
			if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
				l.pings.Add(1)
			}
		}
	}()
	return &teeConn{Conn: c, copy: pw}, nil
}

// teeConn hands a copy of every byte read to copy (until it fails).
type teeConn struct {
	net.Conn
	mu   sync.Mutex
	copy *io.PipeWriter
}

func (c *teeConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		if c.copy != nil {
			if _, werr := c.copy.Write(b[:n]); werr != nil {
				c.copy = nil
			}
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *teeConn) Close() error {
	c.mu.Lock()
	if c.copy != nil {
		_ = c.copy.Close()
		c.copy = nil
	}
	c.mu.Unlock()
	return c.Conn.Close()
}
