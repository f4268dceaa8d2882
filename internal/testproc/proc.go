package testproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/healthcheck"
)

// ErrStopTimeout is returned by Proc.Stop when the process did not exit
// within the bound and was killed.
var ErrStopTimeout = errors.New("testproc: process did not exit in time and was killed")

// CleanupBound is how long a test's cleanup waits, after the stop signal,
// for a process the test left running before it sends SIGKILL.
const CleanupBound = 10 * time.Second

// Options adjusts Start.
type Options struct {
	// Name names the process in messages; the binary's base name if empty.
	Name string
	// Dir is the working directory; the test's if empty.
	Dir string
	// Env is added to the environment (the test's, without SIGIL_*).
	Env []string
	// Group puts the process in a process group of its own and sends
	// every signal to the whole group: for a command that starts others,
	// as a terminal's Ctrl-C does.
	Group bool
	// StopSignal is what Stop sends first; SIGTERM if zero.
	StopSignal syscall.Signal
}

// Proc is a started process.
type Proc struct {
	Name string
	// Logs is everything the process wrote to stdout and stderr.
	Logs *Buffer

	cmd  *exec.Cmd
	opts Options
	done chan struct{}
	err  error // cmd.Wait's, once done is closed
}

// Env returns the test's environment without any SIGIL_* variable.
func Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SIGIL_") {
			env = append(env, kv)
		}
	}
	return env
}

// Start starts bin with args (see StartWith).
func Start(tb testing.TB, bin string, args ...string) *Proc {
	tb.Helper()
	return StartWith(tb, Options{}, bin, args...)
}

// StartWith starts bin with args and returns at once; it fails tb if the
// process cannot be started. At cleanup the process is stopped if it still
// runs (the stop signal, then SIGKILL after CleanupBound), and the end of
// its logs is logged if the test failed.
func StartWith(tb testing.TB, opts Options, bin string, args ...string) *Proc {
	tb.Helper()
	name := opts.Name
	if name == "" {
		name = filepath.Base(bin)
	}
	if opts.StopSignal == 0 {
		opts.StopSignal = syscall.SIGTERM
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = opts.Dir
	cmd.Env = append(Env(), opts.Env...)
	logs := &Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if opts.Group {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	// Children that keep the output pipe open must not hold up Wait.
	cmd.WaitDelay = CleanupBound
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, Logs: logs, cmd: cmd, opts: opts, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		if !p.Exited() {
			if err := p.Stop(CleanupBound); errors.Is(err, ErrStopTimeout) {
				tb.Errorf("%s: %v", name, err)
			}
		}
		if tb.Failed() {
			tb.Logf("%s logs (end):\n%s", name, tail(logs.String(), 16<<10))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited and been reaped.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit error (nil for exit status 0); valid once Done
// is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process (to its group with Options.Group).
func (p *Proc) Signal(sig syscall.Signal) error {
	pid := p.PID()
	if p.opts.Group {
		pid = -pid
	}
	return syscall.Kill(pid, sig)
}

// Stop sends the stop signal and waits up to bound for the process to
// exit; then it sends SIGKILL and returns an error wrapping ErrStopTimeout.
// Otherwise it returns the exit error (nil for exit status 0). The bound
// guards against a hang: it is no measure of how fast the process stops.
func (p *Proc) Stop(bound time.Duration) error {
	if !p.Exited() {
		_ = p.Signal(p.opts.StopSignal)
	}
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s exited with %w after %v", p.Name, p.err, p.opts.StopSignal)
		}
		return nil
	case <-time.After(bound):
		p.Kill()
		return fmt.Errorf("%s: %w (%v, then %s)", p.Name, ErrStopTimeout, p.opts.StopSignal, bound)
	}
}

// Kill sends SIGKILL and waits for the process to be reaped.
func (p *Proc) Kill() {
	if !p.Exited() {
		_ = p.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// WaitLine waits up to timeout for a line of the logs for which match is
// true, and returns it. It fails if the process exits first; the error
// holds the logs.
func (p *Proc) WaitLine(timeout time.Duration, match func(line string) bool) (string, error) {
	deadline := time.Now().Add(timeout)
	off := 0 // logs before off were all complete lines, already tried
	for {
		exited := p.Exited() // before reading: all output is in by then
		s := p.Logs.String()
		for {
			i := strings.IndexByte(s[off:], '\n')
			if i < 0 {
				break
			}
			line := s[off : off+i]
			off += i + 1
			if match(line) {
				return line, nil
			}
		}
		if exited {
			if rest := s[off:]; rest != "" && match(rest) {
				return rest, nil
			}
			return "", fmt.Errorf("%s exited (%v) before the expected log line:\n%s", p.Name, p.err, s)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s: no expected log line within %s:\n%s", p.Name, timeout, s)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// WaitRecord waits up to timeout for a JSON log record whose "msg" is msg
// and decodes it into v (if v is not nil).
func (p *Proc) WaitRecord(timeout time.Duration, msg string, v any) error {
	line, err := p.WaitLine(timeout, func(line string) bool {
		var rec struct{ Msg string }
		return json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg
	})
	if err != nil {
		return fmt.Errorf("waiting for %q: %w", msg, err)
	}
	if v != nil {
		return json.Unmarshal([]byte(line), v)
	}
	return nil
}

// WaitServing polls the plaintext gRPC health of addr (the whole server)
// until it is SERVING, for up to timeout.
func WaitServing(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := healthcheck.Check(ctx, addr, "", nil)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not SERVING within %s: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreeAddr returns a loopback address with a port nothing listens on now,
// for a process that must be told its address in advance.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
