// Package offline holds the authority's offline subcommands, which work on
// a store no authority has open: `authority migrate` copies a bbolt file
// into etcd, `authority compact` rewrites a bbolt file smaller. Both refuse
// a file an authority holds (its lock), change nothing until they have
// checked their result, and print what they did on stdout; errors go to
// stderr, naming the file, prefix or flag, never a credential.
package offline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/sigil-auth/sigil/pkg/flagenv"
	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// DefaultLockTimeout is how long the subcommands wait for the database
// file's lock: short, since a held lock means a running authority, which
// they must refuse rather than wait for.
const DefaultLockTimeout = time.Second

// Exit codes of the subcommands.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// parseFlags parses args into fs and applies the SIGIL_AUTHORITY_<FLAG>
// variables found by lookup, as the authority's own flags. It returns the
// exit code to stop with, or -1 to go on.
func parseFlags(fs *flag.FlagSet, args []string, lookup func(string) (string, bool), name string, stderr io.Writer) int {
	fs.SetOutput(stderr)
	err := flagenv.Parse(fs, args, envPrefix, lookup)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "authority %s: %v\n", name, err)
		return exitUsage
	}
	return -1
}

// fail prints err for subcommand name and returns the failure exit code.
func fail(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "authority %s: %v\n", name, err)
	return exitFailed
}

// lockedHint explains a lock timeout on path.
func lockedHint(path string, err error) error {
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("%s is in use by another process, most likely a running authority: stop it, then run this again (%w)", path, err)
	}
	return err
}

// summary is what the verification compares between two copies of a
// store: per bucket, the number of keys and a SHA-256 over every key and
// value in key order.
type summary struct {
	buckets map[string]*bucketSum
}

type bucketSum struct {
	count int
	h     hash.Hash
	last  []byte // previous key: keys must come in ascending order
}

func newSummary() *summary { return &summary{buckets: map[string]*bucketSum{}} }

// add adds one key of bucket; keys of a bucket must come in ascending
// order (bbolt's and etcd's order alike).
func (s *summary) add(bucket string, k, v []byte) error {
	b := s.buckets[bucket]
	if b == nil {
		b = &bucketSum{h: sha256.New()}
		s.buckets[bucket] = b
	}
	if b.count > 0 && bytes.Compare(b.last, k) >= 0 {
		return fmt.Errorf("bucket %q: keys out of order", bucket)
	}
	b.last = append(b.last[:0], k...)
	b.count++
	b.h.Write(binary.AppendUvarint(nil, uint64(len(k))))
	b.h.Write(k)
	b.h.Write(binary.AppendUvarint(nil, uint64(len(v))))
	b.h.Write(v)
	return nil
}

// names returns the bucket names in order.
func (s *summary) names() []string {
	names := make([]string, 0, len(s.buckets))
	for n := range s.buckets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// total returns the number of keys.
func (s *summary) total() int {
	n := 0
	for _, b := range s.buckets {
		n += b.count
	}
	return n
}

// digest returns a SHA-256 over every bucket's name, count and digest, in
// name order: equal for two copies holding the same keys and values.
func (s *summary) digest() []byte {
	h := sha256.New()
	for _, n := range s.names() {
		b := s.buckets[n]
		h.Write(binary.AppendUvarint(nil, uint64(len(n))))
		h.Write([]byte(n))
		h.Write(binary.AppendUvarint(nil, uint64(b.count)))
		h.Write(b.h.Sum(nil))
	}
	return h.Sum(nil)
}

// compare returns nil when s and o hold the same keys and values, else an
// error naming the first bucket that differs; what and other name the two
// sides.
func (s *summary) compare(o *summary, what, other string) error {
	names := map[string]bool{}
	for n := range s.buckets {
		names[n] = true
	}
	for n := range o.buckets {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		a, b := s.buckets[n], o.buckets[n]
		switch {
		case a == nil:
			return fmt.Errorf("bucket %q: %d keys in %s, none in %s", n, b.count, other, what)
		case b == nil:
			return fmt.Errorf("bucket %q: %d keys in %s, none in %s", n, a.count, what, other)
		case a.count != b.count:
			return fmt.Errorf("bucket %q: %d keys in %s, %d in %s", n, a.count, what, b.count, other)
		case !bytes.Equal(a.h.Sum(nil), b.h.Sum(nil)):
			return fmt.Errorf("bucket %q: same %d keys counted, but the keys or values differ between %s and %s", n, a.count, what, other)
		}
	}
	return nil
}

// print writes the per-bucket counts.
func (s *summary) print(w io.Writer) {
	for _, n := range s.names() {
		fmt.Fprintf(w, "  %-20s %d\n", n, s.buckets[n].count)
	}
}

// fileSummary reads every key of f.
func fileSummary(f *store.File) (*summary, error) {
	sum := newSummary()
	if err := f.Range(sum.add); err != nil {
		return nil, err
	}
	return sum, nil
}

// humanBytes formats n bytes for people, with the exact count.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%d bytes (%.1f %ciB)", n, float64(n)/float64(div), "KMGTPE"[exp])
}

// envPrefix is the prefix of the variables that set the subcommands' flags,
// the authority's.
const envPrefix = config.EnvPrefix

// signalContext is cancelled by SIGINT or SIGTERM: a subcommand stopped
// that way stops at its next step and says where it left things.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}
