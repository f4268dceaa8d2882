package scale

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/sigil-auth/sigil/internal/testproc"
)

var (
	scale = flag.Bool("scale", false, "run the scale measurements (minutes, GBs of disk and memory)")
	// authorityBin runs a prebuilt authority instead of building this
	// tree's: to measure two builds side by side with the same test
	// process (the receivers), alternating them in one sitting.
	authorityBin = flag.String("scale.authority", "", "authority binary to run (default: build services/authority)")
)

// skipUnlessScale keeps the measurements out of ordinary test and benchmark
// runs: they take minutes and a million-token file.
func skipUnlessScale(t testing.TB) {
	t.Helper()
	if !*scale {
		t.Skip("scale measurement: run with -scale")
	}
}

const (
	authorityPkg  = "services/authority"
	authorizerPkg = "services/authorizer"
)

// proc is a running binary with a client connection.
type proc struct {
	*testproc.Proc
	addr string
	conn *grpc.ClientConn
}

func start(t testing.TB, name, pkg string, args ...string) *proc {
	t.Helper()
	return startBin(t, name, testproc.MustBuild(t, pkg), args...)
}

// startBin runs the binary at bin and connects to it.
func startBin(t testing.TB, name, bin string, args ...string) *proc {
	t.Helper()
	tp := testproc.StartWith(t, testproc.Options{Name: name}, bin, args...)
	addr, conn := tp.Listening(t, 2*time.Minute)
	return &proc{Proc: tp, addr: addr, conn: conn}
}

func startAuthority(t testing.TB, dataDir string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", dataDir,
		"--shutdown-timeout", "5s", "--lock-timeout", "5s"}, extra...)
	if *authorityBin != "" {
		return startBin(t, "authority", *authorityBin, args...)
	}
	return start(t, "authority", authorityPkg, args...)
}

// bearer returns a context carrying the credential in dataDir's file
// ("operator.token" or "watch.token").
func bearer(t testing.TB, ctx context.Context, dataDir, file string) context.Context {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, file))
	if err != nil {
		t.Fatal(err)
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(b)))
}

// waitServing polls the gRPC health of conn until SERVING; limit only
// guards against a hang.
func waitServing(t testing.TB, conn *grpc.ClientConn, limit time.Duration) {
	t.Helper()
	h := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(limit)
	for {
		resp, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not SERVING within %s (last %v, %v)", limit, resp.GetStatus(), err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// memKB returns VmRSS and VmHWM of pid, in KiB.
func memKB(t testing.TB, pid int) (rss, hwm int64) {
	t.Helper()
	f := procFields(t, fmt.Sprintf("/proc/%d/status", pid))
	rss, hwm = f["VmRSS:"], f["VmHWM:"]
	if rss == 0 || hwm == 0 {
		t.Fatalf("/proc/%d/status: no VmRSS or VmHWM", pid)
	}
	return rss, hwm
}

// resetHWM resets VmHWM of pid to its current RSS (clear_refs 5), so that
// the next reading is the peak of what follows only.
func resetHWM(t testing.TB, pid int) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times, on Linux.
const clockTick = 100

// cpuTime returns the user+system CPU time pid has used.
func cpuTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name may hold spaces: fields count from after its ")".
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime 15.
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: bad utime or stime", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTick
}

// syscalls returns the read and write system calls pid has made
// (/proc/<pid>/io syscr, syscw): on loopback each is a round of the
// kernel's TCP stack, most of a revocation fan-out's cost.
func syscalls(t testing.TB, pid int) (reads, writes int64) {
	t.Helper()
	f := procFields(t, fmt.Sprintf("/proc/%d/io", pid))
	return f["syscr:"], f["syscw:"]
}

// procFields reads a /proc file of "name: value ..." lines into the first
// number of each line, by name (with its colon).
func procFields(t testing.TB, path string) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
			fields[f[0]] = v
		}
	}
	return fields
}

// percentile returns the p-th percentile (0..100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// logLoad logs the machine's load averages (1, 5, 15 minutes): the
// figures of a shared machine are read against them.
func logLoad(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Logf("load average: %v", err)
		return
	}
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		t.Logf("load average (1, 5, 15 min): %s %s %s on %d CPUs", f[0], f[1], f[2], runtime.NumCPU())
	}
}
