// Package etcdtest runs a real etcd server inside a test process (etcd's
// embed package) on free loopback ports, with its data in a temporary
// directory: the etcd store's tests and the authority's end-to-end test run
// against it. Nothing here is a mock.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is one embedded single-member etcd cluster.
type Server struct {
	e   *embed.Etcd
	dir string
	// Endpoint is the client URL (http://127.0.0.1:port, or https:// with
	// TLS).
	Endpoint string
}

// TLS makes the server serve its clients over TLS.
type TLS struct {
	CertFile, KeyFile string // the server's certificate (for 127.0.0.1) and key
	ClientCAFile      string // when set, clients must present a certificate of this CA
}

// Options configures Start.
type Options struct {
	// MaxTxnOps is the server's --max-txn-ops; 0 keeps etcd's default (128).
	MaxTxnOps uint
	// TLS, when set, serves clients over TLS (mTLS with ClientCAFile).
	TLS *TLS
}

// Start starts a server whose data lives in a new temporary directory
// (removed by Close). fsync is off: these are tests, not durability
// measurements, and the machine is shared.
func Start(opts Options) (*Server, error) {
	dir, err := os.MkdirTemp("", "sigil-etcd-")
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "sigil-test"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	// One member on loopback: short raft ticks elect it at once (and
	// shorten Close's wait for open streams, which derives from them).
	cfg.TickMs, cfg.ElectionMs = 10, 100
	if opts.MaxTxnOps != 0 {
		cfg.MaxTxnOps = opts.MaxTxnOps
	}
	client, peer, err := freeURLs()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if opts.TLS != nil {
		client.Scheme = "https"
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = opts.TLS.CertFile, opts.TLS.KeyFile
		if opts.TLS.ClientCAFile != "" {
			cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = opts.TLS.ClientCAFile, true
		}
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("etcdtest: start: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("etcdtest: server not ready after 30s")
	}
	return &Server{e: e, dir: dir, Endpoint: client.String()}, nil
}

// freeURLs returns two loopback URLs on ports free a moment ago.
func freeURLs() (client, peer url.URL, err error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	var us []url.URL
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return url.URL{}, url.URL{}, err
		}
		ls = append(ls, l)
		us = append(us, url.URL{Scheme: "http", Host: l.Addr().String()})
	}
	return us[0], us[1], nil
}

// Close stops the server and removes its data.
func (s *Server) Close() {
	s.e.Close()
	<-s.e.Server.StopNotify()
	_ = os.RemoveAll(s.dir)
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error
	prefixSeq atomic.Uint64
)

// Shared returns the server shared by the whole test binary, starting it
// at the first call (about a second). Stop it with StopShared at the end of
// TestMain.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = Start(Options{})
	}
	if sharedErr != nil {
		tb.Fatalf("embedded etcd: %v", sharedErr)
	}
	return shared
}

// StopShared stops the shared server, if one was started.
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Close()
		shared = nil
	}
}

// Prefix returns a key prefix no other test of this process uses, so that
// tests sharing the server do not see each other's stores.
func Prefix(tb testing.TB) string {
	return fmt.Sprintf("/sigil-test/%d-%d/", os.Getpid(), prefixSeq.Add(1))
}

// StartT starts a server for one test and returns its client URL; it
// stops, and its data is removed, when the test ends.
func StartT(tb testing.TB) string {
	tb.Helper()
	s, err := Start(Options{})
	if err != nil {
		tb.Fatalf("embedded etcd: %v", err)
	}
	tb.Cleanup(s.Close)
	return s.Endpoint
}
