package app

import (
	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// openStore opens the bbolt store at path with the configured lock timeout.
func openStore(path string, cfg config.Config) (store.Store, error) {
	st, err := store.Open(path, store.Options{Timeout: cfg.LockTimeout})
	if err != nil {
		return nil, err
	}
	return st, nil
}
