package offline

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/app"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// CompactSummary is the help line of `authority compact`.
const CompactSummary = "[--data-dir DIR]: rewrite <data-dir>/sigil.db smaller while no authority runs (the old file is kept as sigil.db.bak)"

// Suffixes of the files compaction makes next to the database file.
const (
	backupSuffix  = ".bak"     // the file as it was before the compaction
	compactSuffix = ".compact" // the compacted copy until it replaces the file
)

// compactTxSize bounds the bytes bbolt copies per transaction while
// compacting, and so its memory.
const compactTxSize = 16 << 20

// Compact runs `authority compact` with args (after the subcommand's name)
// and returns the exit code: 0 done, 1 failed, 2 bad flags.
func Compact(args []string, stdout, stderr io.Writer) int {
	return compactMain(args, os.LookupEnv, stdout, stderr)
}

func compactMain(args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("authority compact", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "./data", "directory holding the bbolt file (sigil.db) to compact")
	lockTimeout := fs.Duration("lock-timeout", DefaultLockTimeout, "how long to wait for the file's lock before refusing (a held lock means a running authority)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: authority compact %s\n\nFlags (also settable as %s_<FLAG>):\n", CompactSummary, envPrefix)
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args, lookup, "compact", stderr); code >= 0 {
		return code
	}
	switch {
	case *dataDir == "":
		fmt.Fprintln(stderr, "authority compact: --data-dir: must not be empty")
		return exitUsage
	case *lockTimeout <= 0:
		fmt.Fprintf(stderr, "authority compact: --lock-timeout: must be positive, got %s\n", *lockTimeout)
		return exitUsage
	}
	res, err := compactFile(filepath.Join(*dataDir, app.DBFile), *lockTimeout)
	if err != nil {
		return fail(stderr, "compact", err)
	}
	fmt.Fprintf(stdout, "compacted %s: %s before, %s after\n", res.path, humanBytes(res.before), humanBytes(res.after))
	fmt.Fprintf(stdout, "epoch %s, revision %d, history digest %x: unchanged, checked on the new file\n", res.head.Epoch, res.head.Revision, res.head.Digest)
	fmt.Fprintf(stdout, "the file as it was is kept as %s: delete it once the authority runs on the new one (compact refuses to run while it exists)\n", res.path+backupSuffix)
	return exitOK
}

// compactResult is what compactFile did.
type compactResult struct {
	path          string
	before, after int64
	head          store.FileHead
}

// compactFile compacts the store file at path into path+".compact",
// checks the copy (it opens with Open's full check, at the same epoch,
// revision and history digest, with the same keys and values in every
// bucket), then keeps the old file as path+".bak" (a hard link) and
// renames the copy over path, which is atomic: a crash leaves either file
// whole at path. It refuses to run when path+".bak" exists, so that a
// backup is never overwritten, and while another process holds the file.
// The file's exclusive lock is held throughout, so no authority opens the
// old file meanwhile.
func compactFile(path string, lockTimeout time.Duration) (compactResult, error) {
	res := compactResult{path: path}
	bak, tmp := path+backupSuffix, path+compactSuffix
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		// The rename would replace the link by a file in this directory.
		return res, fmt.Errorf("%s is a symbolic link: move the file it points to into the data directory, or compact it there", path)
	}
	if _, err := os.Lstat(bak); !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("%s exists (left by an earlier compaction): move it away or delete it, then run compact again", bak)
	}
	src, err := store.OpenFile(path, lockTimeout, true)
	if err != nil {
		return res, lockedHint(path, err)
	}
	defer src.Close()
	// Holding the lock, nothing else is compacting this file: a copy left
	// here is from an interrupted run.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("removing the leftover %s: %w", tmp, err)
	}
	if res.head, err = src.Head(); err != nil {
		return res, err
	}
	if res.before, err = src.Size(); err != nil {
		return res, err
	}
	want, err := fileSummary(src)
	if err != nil {
		return res, err
	}
	if err := src.CompactTo(tmp, compactTxSize); err != nil {
		return res, err
	}
	if err := checkCompacted(tmp, res.head, want, lockTimeout); err != nil {
		_ = os.Remove(tmp)
		return res, fmt.Errorf("the compacted copy failed its check, %s is unchanged: %w", path, err)
	}
	if err := os.Link(path, bak); err != nil {
		_ = os.Remove(tmp)
		return res, fmt.Errorf("keeping the old file as %s: %w", bak, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(bak)
		_ = os.Remove(tmp)
		return res, fmt.Errorf("replacing %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return res, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return res, err
	}
	res.after = fi.Size()
	return res, nil
}

// checkCompacted checks the compacted copy at tmp: the same keys and
// values as the original (want), and the store opens on it, with its full
// check, at the original's epoch, revision and history digest.
func checkCompacted(tmp string, head store.FileHead, want *summary, lockTimeout time.Duration) error {
	f, err := store.OpenFile(tmp, lockTimeout, false)
	if err != nil {
		return err
	}
	got, err := fileSummary(f)
	_ = f.Close()
	if err != nil {
		return err
	}
	if err := want.compare(got, "the original", "the copy"); err != nil {
		return err
	}
	s, err := store.Open(tmp, store.Options{Timeout: lockTimeout})
	if err != nil {
		return err
	}
	defer s.Close()
	if s.Epoch() != head.Epoch || s.Revision() != head.Revision {
		return fmt.Errorf("the copy opens at epoch %s revision %d, the original is at epoch %s revision %d",
			s.Epoch(), s.Revision(), head.Epoch, head.Revision)
	}
	d, err := s.DigestAt(context.Background(), head.Revision)
	if err != nil {
		return err
	}
	if !bytes.Equal(d, head.Digest) {
		return fmt.Errorf("the copy's history digest at revision %d differs from the original's", head.Revision)
	}
	return s.Close()
}

// syncDir fsyncs a directory, making a rename in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
