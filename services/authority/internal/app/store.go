package app

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/sigil-auth/sigil/pkg/tlsconfig"
	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// openStore opens the configured store: the bbolt file in the data
// directory (with the configured lock timeout), or the etcd cluster under
// the configured prefix. It also returns where the store is, for the log:
// the file's path, or the endpoints and prefix (never credentials).
func openStore(ctx context.Context, cfg config.Config) (store.Store, string, error) {
	if cfg.Store == config.StoreEtcd {
		tlsCfg, err := tlsconfig.Client(cfg.EtcdCA, cfg.EtcdCert, cfg.EtcdKey)
		if err != nil {
			return nil, "", fmt.Errorf("etcd: %w", err)
		}
		where := fmt.Sprintf("etcd %v prefix %s", cfg.EtcdEndpointList(), cfg.EtcdPrefix)
		st, err := store.OpenEtcd(ctx, store.EtcdOptions{
			Endpoints: cfg.EtcdEndpointList(), Prefix: cfg.EtcdPrefix, TLS: tlsCfg, DialTimeout: cfg.EtcdDialTimeout,
		})
		if err != nil {
			return nil, "", fmt.Errorf("open store on %s: %w", where, err)
		}
		return st, where, nil
	}
	path := filepath.Join(cfg.DataDir, DBFile)
	st, err := store.Open(path, store.Options{Timeout: cfg.LockTimeout})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, "", fmt.Errorf("database %s is in use by another process (waited %s): %w", path, cfg.LockTimeout, err)
		}
		return nil, "", fmt.Errorf("open database %s: %w", path, err)
	}
	return st, path, nil
}
