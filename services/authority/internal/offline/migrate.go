package offline

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sigil-auth/sigil/pkg/flagcheck"
	"github.com/sigil-auth/sigil/pkg/tlsconfig"
	"github.com/sigil-auth/sigil/services/authority/internal/app"
	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// MigrateSummary is the help line of `authority migrate`.
const MigrateSummary = "--from-data-dir DIR --etcd-endpoints URLS [--etcd-prefix P] [etcd TLS flags] [--force-restart]: copy a stopped authority's bbolt file into an empty etcd prefix, verified"

// The migration's marker (store.EtcdMigrationMarker and
// store.EtcdMigrationSchema): while a migration is in progress, or after
// one was interrupted, markerName under the prefix says which one, and the
// schema key holds inProgressSchema instead of a schema version, so that
// every authority refuses to open the prefix (OpenEtcd reads the schema key
// first). The last transaction writes the real schema version and deletes
// the marker.
const (
	markerName       = store.EtcdMigrationMarker
	inProgressSchema = store.EtcdMigrationSchema
)

// migrateConfig is the command line of `authority migrate`.
type migrateConfig struct {
	FromDataDir  string
	Endpoints    string
	Prefix       string
	CA           string
	Cert         string
	Key          string
	DialTimeout  time.Duration
	LockTimeout  time.Duration
	ForceRestart bool
}

// Migrate runs `authority migrate` with args (after the subcommand's name)
// and returns the exit code: 0 done, 1 failed, 2 bad flags.
func Migrate(args []string, stdout, stderr io.Writer) int {
	return migrateMain(args, os.LookupEnv, stdout, stderr, nil)
}

func migrateMain(args []string, lookup func(string) (string, bool), stdout, stderr io.Writer, adjust func(*migrator)) int {
	var c migrateConfig
	fs := flag.NewFlagSet("authority migrate", flag.ContinueOnError)
	fs.StringVar(&c.FromDataDir, "from-data-dir", "", "data directory of the stopped authority whose sigil.db is copied (required)")
	fs.StringVar(&c.Endpoints, "etcd-endpoints", "", "comma-separated etcd client URLs (http:// or https://) (required)")
	fs.StringVar(&c.Prefix, "etcd-prefix", store.DefaultEtcdPrefix, "prefix the store is copied under, ending with /; nothing may be under it yet")
	fs.StringVar(&c.CA, "etcd-ca", "", "CA file (PEM) verifying the etcd servers; with https endpoints")
	fs.StringVar(&c.Cert, "etcd-cert", "", "client certificate (PEM) presented to etcd; with --etcd-key")
	fs.StringVar(&c.Key, "etcd-key", "", "client private key (PEM) for --etcd-cert")
	fs.DurationVar(&c.DialTimeout, "etcd-dial-timeout", store.DefaultEtcdDialTimeout, "bound of connecting to etcd")
	fs.DurationVar(&c.LockTimeout, "lock-timeout", DefaultLockTimeout, "how long to wait for the file's lock before refusing (a held lock means a running authority)")
	fs.BoolVar(&c.ForceRestart, "force-restart", false, "delete what an interrupted migration left under --etcd-prefix (only that: never a finished store) and copy again")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: authority migrate %s\n\nFlags (also settable as %s_<FLAG>):\n", MigrateSummary, envPrefix)
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args, lookup, "migrate", stderr); code >= 0 {
		return code
	}
	if err := c.validate(); err != nil {
		fmt.Fprintf(stderr, "authority migrate: %v\n", err)
		return exitUsage
	}
	tlsCfg, err := tlsconfig.Client(c.CA, c.Cert, c.Key)
	if err != nil {
		return fail(stderr, "migrate", fmt.Errorf("etcd TLS (--etcd-ca, --etcd-cert, --etcd-key): %w", err))
	}
	m := &migrator{cfg: c, tls: tlsCfg, out: stdout, maxOps: store.DefaultEtcdMaxTxnOps,
		maxBytes: store.DefaultEtcdMaxRequestBytes / 2, timeout: store.DefaultEtcdRequestTimeout}
	if adjust != nil {
		adjust(m)
	}
	ctx, stop := signalContext()
	defer stop()
	if err := m.run(ctx); err != nil {
		return fail(stderr, "migrate", err)
	}
	return exitOK
}

// validate checks the flags, each problem naming its flag.
func (c migrateConfig) validate() error {
	var p flagcheck.Problems
	if c.FromDataDir == "" {
		p.Add("from-data-dir", "is required")
	}
	config.ValidateEtcd(&p, config.SplitList(c.Endpoints), c.Prefix, c.CA, c.Cert, c.Key, "is required")
	p.Positive("etcd-dial-timeout", c.DialTimeout)
	p.Positive("lock-timeout", c.LockTimeout)
	return p.Err()
}

// migrator copies one bbolt file into etcd.
type migrator struct {
	cfg      migrateConfig
	tls      *tls.Config
	out      io.Writer
	cli      *clientv3.Client
	maxOps   int           // puts per transaction: etcd's --max-txn-ops
	maxBytes int           // bytes of keys and values per transaction, well under --max-request-bytes
	timeout  time.Duration // of one etcd request

	markerKey, schemaKey string
	marker               string // this run's marker value

	// afterTxn, when set (tests), runs after each committed copy
	// transaction with their count so far; an error stops the copy there,
	// as a crash would.
	afterTxn func(n int) error
}

// run is the whole migration: lock and check the file, claim the empty
// prefix, copy, verify the copy key by key, finish, and check that the
// store opens on etcd where it was.
func (m *migrator) run(ctx context.Context) error {
	path := filepath.Join(m.cfg.FromDataDir, app.DBFile)
	f, err := store.OpenFile(path, m.cfg.LockTimeout, false)
	if err != nil {
		return lockedHint(path, err)
	}
	defer f.Close()
	head, err := f.Head()
	if err != nil {
		return err
	}
	prefix := m.cfg.Prefix
	m.markerKey, m.schemaKey = prefix+markerName, store.EtcdSchemaKey(prefix)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: config.SplitList(m.cfg.Endpoints), DialTimeout: m.cfg.DialTimeout, TLS: m.tls,
		Logger: zap.NewNop(), Context: ctx,
	})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer cli.Close()
	m.cli = cli
	var run [8]byte
	if _, err := rand.Read(run[:]); err != nil {
		return err
	}
	m.marker = fmt.Sprintf("run %s: from %s, epoch %s, revision %d, started %s",
		hex.EncodeToString(run[:]), path, head.Epoch, head.Revision, time.Now().UTC().Format(time.RFC3339))
	if err := m.claim(ctx); err != nil {
		return err
	}
	fmt.Fprintf(m.out, "copying %s (epoch %s, revision %d) under etcd prefix %s\n", path, head.Epoch, head.Revision, prefix)
	want, schema, txns, err := m.copy(ctx, f)
	if err != nil {
		return fmt.Errorf("copy interrupted, the prefix %s is marked as an unfinished migration (authorities refuse it): "+
			"run migrate again with --force-restart to start over: %w", prefix, err)
	}
	got, err := m.etcdSummary(ctx)
	if err != nil {
		return fmt.Errorf("reading the copy back: %w", err)
	}
	if err := want.compare(got, path, "etcd prefix "+prefix); err != nil {
		return fmt.Errorf("verification failed, the prefix %s stays marked as an unfinished migration: %w", prefix, err)
	}
	if err := m.finish(ctx, schema); err != nil {
		return err
	}
	if err := m.checkOpens(ctx, head); err != nil {
		if qerr := m.quarantine(ctx); qerr != nil {
			return fmt.Errorf("the migrated store failed its check (%w), and marking it unfinished again failed too: %v: do not start authorities on prefix %s", err, qerr, prefix)
		}
		return fmt.Errorf("the migrated store failed its check, the prefix %s is marked as an unfinished migration again: %w", prefix, err)
	}
	fmt.Fprintf(m.out, "copied %d keys in %d transactions, then the schema version; keys per bucket:\n", want.total(), txns)
	want.print(m.out)
	fmt.Fprintf(m.out, "verified: the same keys and values on both sides (digest %x)\n", want.digest())
	fmt.Fprintf(m.out, "the store opens on etcd at epoch %s, revision %d, history digest %x, as in the file:\n"+
		"authorizers resume where they are, without a snapshot\n", head.Epoch, head.Revision, head.Digest)
	fmt.Fprintf(m.out, "start the authorities with --store etcd --etcd-prefix %s and the same KEK; do not start an authority on %s again\n", prefix, path)
	return nil
}

// claim writes this run's marker and the in-progress schema under the
// prefix, in one transaction that succeeds only if nothing is under it.
// With --force-restart, what an interrupted migration left is deleted
// first (only when the marker is there: never a store).
func (m *migrator) claim(ctx context.Context) error {
	prefix := m.cfg.Prefix
	for attempt := 0; attempt < 2; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, m.timeout)
		resp, err := m.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(prefix), "=", 0).WithPrefix()).
			Then(clientv3.OpPut(m.markerKey, m.marker), clientv3.OpPut(m.schemaKey, inProgressSchema)).
			Else(clientv3.OpGet(m.markerKey)).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("etcd (%s): %w", m.cfg.Endpoints, err)
		}
		if resp.Succeeded {
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			return fmt.Errorf("etcd prefix %s is not empty (it holds a store or other keys): migrate only into an empty prefix "+
				"(--force-restart clears only an unfinished migration, never a store)", prefix)
		}
		old := string(kvs[0].Value)
		if !m.cfg.ForceRestart {
			return fmt.Errorf("etcd prefix %s holds an unfinished migration (%s = %q): authorities refuse it; "+
				"run migrate again with --force-restart to delete everything under %s and copy again", prefix, m.markerKey, old, prefix)
		}
		rctx, cancel = context.WithTimeout(ctx, m.timeout)
		dresp, err := m.cli.Txn(rctx).If(clientv3.Compare(clientv3.Value(m.markerKey), "=", old)).
			Then(clientv3.OpDelete(prefix, clientv3.WithPrefix())).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("etcd (%s): clearing the unfinished migration: %w", m.cfg.Endpoints, err)
		}
		if dresp.Succeeded {
			fmt.Fprintf(m.out, "--force-restart: deleted what the unfinished migration (%s) left under %s\n", old, prefix)
		}
	}
	return fmt.Errorf("etcd prefix %s changed while clearing it: is another migrate running?", prefix)
}

// copy writes every key of f under the prefix (the schema key excepted:
// finish writes it), in transactions of at most maxOps puts and about
// maxBytes bytes, each guarded by this run's marker. It returns the
// summary of what it copied, the schema value and the transaction count.
func (m *migrator) copy(ctx context.Context, f *store.File) (*summary, []byte, int, error) {
	sum := newSummary()
	var (
		ops    []clientv3.Op
		size   int
		txns   int
		schema []byte
	)
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if err := m.guarded(ctx, ops...); err != nil {
			return err
		}
		txns++
		ops, size = ops[:0], 0
		if m.afterTxn != nil {
			return m.afterTxn(txns)
		}
		return nil
	}
	err := f.Range(func(bucket string, k, v []byte) error {
		if strings.Contains(bucket, "/") {
			return fmt.Errorf("bucket %q: a name with / has no etcd layout", bucket)
		}
		key := store.EtcdKey(m.cfg.Prefix, bucket, k)
		if key == m.schemaKey {
			schema = bytes.Clone(v)
			return nil
		}
		if err := sum.add(bucket, k, v); err != nil {
			return err
		}
		n := len(key) + len(v) + 16
		if n > m.maxBytes {
			return fmt.Errorf("bucket %q: a key and value of %d bytes do not fit one etcd request", bucket, n)
		}
		if len(ops) == m.maxOps || size+n > m.maxBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		ops = append(ops, clientv3.OpPut(key, string(v)))
		size += n
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil && schema == nil {
		err = errors.New("the file has no schema version")
	}
	return sum, schema, txns, err
}

// guarded commits ops in one transaction if this run's marker is still
// there.
func (m *migrator) guarded(ctx context.Context, ops ...clientv3.Op) error {
	rctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	resp, err := m.cli.Txn(rctx).If(clientv3.Compare(clientv3.Value(m.markerKey), "=", m.marker)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("etcd (%s): %w", m.cfg.Endpoints, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("the migration marker %s changed: another migrate (--force-restart) took the prefix over", m.markerKey)
	}
	return nil
}

// etcdSummary reads every key under the prefix at one etcd revision, but
// the marker and the schema key, into a summary.
func (m *migrator) etcdSummary(ctx context.Context) (*summary, error) {
	sum := newSummary()
	prefix := m.cfg.Prefix
	from, end := prefix, clientv3.GetPrefixRangeEnd(prefix)
	var rev int64
	for {
		rctx, cancel := context.WithTimeout(ctx, m.timeout)
		resp, err := m.cli.Get(rctx, from, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(1000))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("etcd (%s): %w", m.cfg.Endpoints, err)
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			if k == m.markerKey || k == m.schemaKey {
				continue
			}
			bucket, key, ok := strings.Cut(strings.TrimPrefix(k, prefix), "/")
			if !ok {
				return nil, fmt.Errorf("key %q under the prefix is in no bucket", k)
			}
			if err := sum.add(bucket, []byte(key), kv.Value); err != nil {
				return nil, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return sum, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// finish writes the schema version and deletes the marker, in one
// transaction guarded by the marker: from then on the prefix is a store.
func (m *migrator) finish(ctx context.Context, schema []byte) error {
	if err := m.guarded(ctx, clientv3.OpPut(m.schemaKey, string(schema)), clientv3.OpDelete(m.markerKey)); err != nil {
		return fmt.Errorf("finishing: %w", err)
	}
	return nil
}

// quarantine marks the prefix as an unfinished migration again, after the
// check of the finished store failed.
func (m *migrator) quarantine(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	_, err := m.cli.Txn(rctx).Then(clientv3.OpPut(m.markerKey, m.marker), clientv3.OpPut(m.schemaKey, inProgressSchema)).Commit()
	return err
}

// checkOpens opens the store on etcd as an authority does and checks that
// it is where the file was: same epoch, revision and history digest, and
// the store's invariants hold.
func (m *migrator) checkOpens(ctx context.Context, head store.FileHead) error {
	s, err := store.OpenEtcd(ctx, store.EtcdOptions{
		Endpoints: config.SplitList(m.cfg.Endpoints), Prefix: m.cfg.Prefix, TLS: m.tls, DialTimeout: m.cfg.DialTimeout,
	})
	if err != nil {
		return err
	}
	defer s.Close()
	if s.Epoch() != head.Epoch || s.Revision() != head.Revision {
		return fmt.Errorf("the store opens at epoch %s revision %d, the file is at epoch %s revision %d",
			s.Epoch(), s.Revision(), head.Epoch, head.Revision)
	}
	d, err := s.DigestAt(ctx, head.Revision)
	if err != nil {
		return err
	}
	if !bytes.Equal(d, head.Digest) {
		return fmt.Errorf("the history digest at revision %d differs from the file's", head.Revision)
	}
	if err := s.Check(ctx); err != nil {
		return err
	}
	return s.Close()
}
