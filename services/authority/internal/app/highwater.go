package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// HighWaterFile is the name, in the data directory, of the file recording
// the highest revision the authority has acknowledged, outside the store:
// a store that comes back at a lower revision of the same epoch was rolled
// back (a damaged newest meta page makes bbolt fall back to the older one)
// or restored, and the authority must not serve it silently.
const HighWaterFile = "high-water"

// highWaterInterval bounds how often the mark is written: writes are
// batched so that the fsync never slows a mutation. A crash loses at most
// this much of the mark (the revisions acknowledged in the last interval
// are then not protected against a rollback).
const highWaterInterval = time.Second

// ErrRolledBack is returned at start-up when the store is below the mark.
var ErrRolledBack = errors.New("store rolled back")

// mark is the content of the high-water file.
type mark struct {
	epoch    string
	revision uint64
}

// readMark reads the high-water file; ok is false when there is none.
func readMark(path string) (m mark, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return mark{}, false, nil
	}
	if err != nil {
		return mark{}, false, fmt.Errorf("high-water file: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 3 || f[0] != "sigil-high-water-v1" || len(f[1]) != 32 {
		return mark{}, false, fmt.Errorf("high-water file %s is not readable: start with --restored to rewrite it", path)
	}
	rev, err := strconv.ParseUint(f[2], 10, 64)
	if err != nil {
		return mark{}, false, fmt.Errorf("high-water file %s is not readable: start with --restored to rewrite it", path)
	}
	return mark{epoch: f[1], revision: rev}, true, nil
}

// writeMark replaces the high-water file atomically and durably: temporary
// file, fsync, rename, fsync of the directory.
func writeMark(path string, m mark) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("high-water file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = fmt.Fprintf(tmp, "sigil-high-water-v1 %s %d\n", m.epoch, m.revision)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("high-water file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// historyRewinds counts the starts that found the store's history not
// continuing the recorded mark, by kind: "epoch" (another store) or
// "revision" (same epoch, lower revision, accepted with --restored).
var historyRewindKinds = []string{"epoch", "revision"}

func newRewindCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_store_history_rewinds_total",
		Help: "Starts that found the store not continuing the recorded high-water mark: another epoch, or a lower revision accepted with --restored.",
	}, []string{"kind"})
	for _, k := range historyRewindKinds {
		c.WithLabelValues(k)
	}
	return c
}

// checkMark compares the store with the high-water mark at path and, when
// it may start, moves the mark to the store (written before serving). A
// lower revision of the same epoch is refused unless restored.
func checkMark(path string, st store.Store, restored bool, logger *slog.Logger, rewinds *prometheus.CounterVec) error {
	cur := mark{epoch: st.Epoch(), revision: st.Revision()}
	m, ok, err := readMark(path)
	if err != nil && !restored {
		return err
	}
	switch {
	case err != nil:
		logger.Warn("high-water file unreadable; rewriting it (--restored)", "path", path, "error", err.Error())
	case !ok:
	case m.epoch != cur.epoch:
		rewinds.WithLabelValues("epoch").Inc()
		logger.Warn("the store has another epoch than the one last acknowledged (a new or restored store): authorizers take a snapshot",
			"path", path, "epoch", cur.epoch, "previous_epoch", m.epoch, "revision", cur.revision, "previous_revision", m.revision)
	case cur.revision < m.revision && !restored:
		return fmt.Errorf("%w: the store is at revision %d but revision %d was acknowledged: the file was rolled back (damaged meta page?) or restored; start with --restored after following docs/operations.md",
			ErrRolledBack, cur.revision, m.revision)
	case cur.revision < m.revision:
		rewinds.WithLabelValues("revision").Inc()
		logger.Warn("the store is below the acknowledged revision; accepted with --restored, mark moved",
			"revision", cur.revision, "acknowledged_revision", m.revision)
	}
	return writeMark(path, cur)
}

// markWriter keeps the high-water file at the store's revision: after a
// commit, at most once per highWaterInterval, and once more when stopped.
type markWriter struct {
	path   string
	st     store.Store
	logger *slog.Logger
	done   chan struct{}
	last   uint64
}

// run writes the mark until ctx ends, then writes it a last time.
func (w *markWriter) run(ctx context.Context) {
	defer close(w.done)
	defer w.flush()
	t := time.NewTimer(0)
	<-t.C
	for {
		ch := w.st.Changed()
		if w.st.Revision() == w.last {
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
		}
		// Batch the commits of the interval into one write.
		t.Reset(highWaterInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		w.flush()
	}
}

// flush writes the current revision when it is above the last written.
func (w *markWriter) flush() {
	rev := w.st.Revision()
	if rev <= w.last {
		return
	}
	if err := writeMark(w.path, mark{epoch: w.st.Epoch(), revision: rev}); err != nil {
		// Not fatal: the store is intact, only the rollback guard lags.
		w.logger.Error("writing the high-water mark", "path", w.path, "error", err.Error())
		return
	}
	w.last = rev
}
