package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/sigil-auth/sigil/pkg/tlsconfig"
	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// openStore opens the configured store: the bbolt file in the data
// directory (with the configured lock timeout), or the etcd cluster under
// the configured prefix. It also returns where the store is, for the log:
// the file's path, or the endpoints and prefix (never credentials), and
// the etcd client's TLS configuration (nil for bbolt or plaintext etcd).
// onFault receives damage found after opening (bbolt only).
func openStore(ctx context.Context, cfg config.Config, onFault func(error)) (store.Store, string, *tls.Config, error) {
	if cfg.Store == config.StoreEtcd {
		tlsCfg, err := tlsconfig.Client(cfg.EtcdCA, cfg.EtcdCert, cfg.EtcdKey)
		if err != nil {
			return nil, "", nil, fmt.Errorf("etcd: %w", err)
		}
		where := fmt.Sprintf("etcd %v prefix %s", cfg.EtcdEndpointList(), cfg.EtcdPrefix)
		st, err := store.OpenEtcd(ctx, store.EtcdOptions{
			Endpoints: cfg.EtcdEndpointList(), Prefix: cfg.EtcdPrefix, TLS: tlsCfg, DialTimeout: cfg.EtcdDialTimeout,
		})
		if err != nil {
			return nil, "", nil, fmt.Errorf("open store on %s: %w", where, err)
		}
		return st, where, tlsCfg, nil
	}
	path := filepath.Join(cfg.DataDir, DBFile)
	st, err := store.Open(path, store.Options{
		Timeout: cfg.LockTimeout, SkipCheck: cfg.SkipOpenCheck, Init: cfg.Init, OnFault: onFault,
	})
	if err != nil {
		if errors.Is(err, store.ErrDamaged) || errors.Is(err, store.ErrEmptyFile) {
			return nil, "", nil, err // says the path and what to do
		}
		if errors.Is(err, store.ErrLocked) {
			return nil, "", nil, fmt.Errorf("database %s is in use by another process (waited %s): %w", path, cfg.LockTimeout, err)
		}
		return nil, "", nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return st, path, nil, nil
}

// checkTook is how long the open check took, for the log ("" when none ran).
func checkTook(st store.Store) string {
	if b, ok := st.(*store.Bolt); ok && b.CheckTook() > 0 {
		return b.CheckTook().String()
	}
	return ""
}

// faultReporter takes damage found after start-up (a recovered bbolt
// panic in any goroutine that touches the store): it logs it at ERROR
// once and makes health NOT_SERVING for good, so that load balancers and
// authorizers' operators see it, instead of the process crashing with a
// goroutine dump or serving on.
type faultReporter struct {
	logger *slog.Logger

	mu         sync.Mutex
	err        error
	stalled    bool // the write probe finds writes not committing (temporary)
	setServing func(bool)
}

// isStalled reports whether the write probe finds writes stalled now.
func (f *faultReporter) isStalled() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stalled
}

// stall turns health NOT_SERVING while writes do not commit (true), and
// back on when they do again (false), unless damage was reported.
func (f *faultReporter) stall(stalled bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stalled = stalled
	if f.setServing != nil {
		f.setServing(f.err == nil && !f.stalled)
	}
}

// report records the first fault.
func (f *faultReporter) report(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return
	}
	f.err = err
	f.logger.Error("database damaged while serving; health is NOT_SERVING until the file is restored from backup", "error", err.Error())
	if f.setServing != nil {
		f.setServing(false)
	}
}

// serving hands over the health switch and turns it on, unless a fault
// was reported already.
func (f *faultReporter) serving(set func(bool)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setServing = set
	set(f.err == nil && !f.stalled)
}
