// Package testproc is the tests' one harness for the real binaries: it
// builds a main package once per test run, starts it, captures its output
// in a Buffer, waits for it (a log line, gRPC health SERVING) and stops it
// by its process id.
//
// # Building once
//
// `go test ./...` runs every package's tests in a separate process, and
// several of them need the same binaries. [Build] therefore keeps the
// binaries in a directory shared by those processes:
//
//	$SIGIL_TESTPROC_DIR (default os.TempDir()/sigil-testproc)/<key>/<package>/<name>
//
// where key is a hash of everything that decides what `go build` produces:
// the go command's GOVERSION, GOOS, GOARCH, CGO_ENABLED, GOFLAGS and
// GOEXPERIMENT; go.mod and go.sum; and the path and content of every
// non-test .go file of the module (test files do not go into a binary). A
// change to any of them between runs makes a new key, so a stale binary is
// never reused. The module has no //go:embed files; if one is added, its
// files must be added to the key (see sourceKey).
//
// Concurrent packages build under an exclusive flock(2) on <key>.lock: the
// first one builds (into a temporary name, renamed into place), the others
// wait on the lock and then find the binary. Within one process the result
// is also remembered, so a package pays the hashing once. Each actual build
// prints "testproc: built <package> in <dir>" to stderr (shown by go test
// -v); with SIGIL_TESTPROC_VERBOSE=1 each reuse prints "testproc: reused
// ...". Key directories not used for a day are removed when a new key is
// built.
//
// The binaries are built without -race even when the tests run with -race:
// the race detector of the test process cannot see into another process,
// the services' code runs in-process under -race in their own packages'
// tests (internal/app, internal/server, ...), and a race build is several
// times slower to build and to run. GOFLAGS=-race still builds race
// binaries (and is part of the key).
//
// # Processes
//
// [Start] runs a binary with the test's environment minus any SIGIL_*
// variable (a developer's own configuration must not leak into a test),
// stdout and stderr both into Proc.Logs. Proc.Stop sends SIGTERM (or
// Options.StopSignal), waits a bound and then sends SIGKILL; Proc.Kill sends
// SIGKILL. t.Cleanup stops a process the test left running and, if the test
// failed, logs the end of its output.
package testproc
