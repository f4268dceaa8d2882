package testproc

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build returns the path of the binary of the main package at pkg, a
// directory relative to the module root such as "services/authority",
// building it only if no test process has built it from the same sources
// (see the package documentation).
func Build(pkg string) (string, error) {
	b, err := defaultBuilder()
	if err != nil {
		return "", err
	}
	return b.build(pkg)
}

// MustBuild is Build that fails tb on error.
func MustBuild(tb testing.TB, pkg string) string {
	tb.Helper()
	path, err := Build(pkg)
	if err != nil {
		tb.Fatal(err)
	}
	return path
}

var (
	defaultOnce sync.Once
	defaultB    *builder
	defaultErr  error
)

func defaultBuilder() (*builder, error) {
	defaultOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			defaultErr = err
			return
		}
		base := os.Getenv("SIGIL_TESTPROC_DIR")
		if base == "" {
			base = filepath.Join(os.TempDir(), "sigil-testproc")
		}
		defaultB = newBuilder(root, base, os.Stderr)
		defaultB.verbose = os.Getenv("SIGIL_TESTPROC_VERBOSE") != ""
	})
	return defaultB, defaultErr
}

// moduleRoot is the nearest directory at or above the working directory
// (a test's package directory) that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testproc: no go.mod above the working directory")
		}
		dir = parent
	}
}

// builder builds the main packages of the module at root into base.
type builder struct {
	root, base string
	log        io.Writer
	verbose    bool

	mu    sync.Mutex
	key   string            // sourceKey(root), computed once
	paths map[string]string // package → binary, for this process
	built int               // go build runs by this builder
}

func newBuilder(root, base string, log io.Writer) *builder {
	return &builder{root: root, base: base, log: log, paths: map[string]string{}}
}

func (b *builder) build(pkg string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	pkg = filepath.ToSlash(filepath.Clean(pkg))
	if p, ok := b.paths[pkg]; ok {
		return p, nil
	}
	if b.key == "" {
		key, err := sourceKey(b.root)
		if err != nil {
			return "", err
		}
		b.key = key
	}
	if err := os.MkdirAll(b.base, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(filepath.Join(b.base, b.key+".lock"), true)
	if err != nil {
		return "", err
	}
	defer unlock()
	dir := filepath.Join(b.base, b.key)
	bin := filepath.Join(dir, filepath.FromSlash(pkg), filepath.Base(pkg))
	if _, err := os.Stat(bin); err == nil {
		now := time.Now()
		_ = os.Chtimes(dir, now, now)
		if b.verbose {
			fmt.Fprintf(b.log, "testproc: reused %s from %s\n", pkg, dir)
		}
		b.paths[pkg] = bin
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	// -buildvcs=auto: stamp the commit, as `go tool task build` does, even
	// where the go env turns stamping off.
	cmd := exec.Command("go", "build", "-buildvcs=auto", "-o", tmp, "./"+pkg)
	cmd.Dir = b.root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("testproc: go build ./%s: %v\n%s", pkg, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	b.built++
	fmt.Fprintf(b.log, "testproc: built %s in %s (%s)\n", pkg, dir, time.Since(start).Round(time.Millisecond))
	b.paths[pkg] = bin
	b.prune()
	return bin, nil
}

// prune removes the key directories of base not used for a day, those whose
// lock it can take at once.
func (b *builder) prune() {
	entries, err := os.ReadDir(b.base)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == b.key {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < 24*time.Hour {
			continue
		}
		lock := filepath.Join(b.base, e.Name()+".lock")
		unlock, err := lockFile(lock, false)
		if err != nil {
			continue // in use
		}
		os.RemoveAll(filepath.Join(b.base, e.Name()))
		os.Remove(lock)
		unlock()
	}
}

// lockFile takes an exclusive flock on path, waiting for it if wait, and
// returns its release.
func lockFile(path string, wait bool) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("testproc: lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// sourceKey hashes what decides the binaries built from the module at
// root: the go command's build settings, go.mod, go.sum and every non-test
// .go file (hidden directories, "_" directories and nested modules are not
// part of the module).
func sourceKey(root string) (string, error) {
	h := sha256.New()
	env := exec.Command("go", "env", "GOVERSION", "GOOS", "GOARCH", "CGO_ENABLED", "GOFLAGS", "GOEXPERIMENT", "GOAMD64", "GOARM64")
	env.Dir = root
	out, err := env.Output()
	if err != nil {
		return "", fmt.Errorf("testproc: go env: %w", err)
	}
	h.Write(out)
	var files []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if (strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")) ||
			(filepath.Dir(path) == root && (name == "go.mod" || name == "go.sum")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("testproc: hashing sources: %w", err)
	}
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(root, f)
		sum := sha256.Sum256(data)
		fmt.Fprintf(h, "%s %x\n", filepath.ToSlash(rel), sum)
	}
	return hex.EncodeToString(h.Sum(nil))[:20], nil
}
