package main

import (
	"bufio"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// TestGCFloor runs the real binary: with nothing in the environment it
// raises GOGC above 100 for its small heap (pkg/gcfloor), as its /metrics
// show; with GOGC or GOMEMLIMIT set it leaves the collector to the
// operator.
func TestGCFloor(t *testing.T) {
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	for _, c := range []struct {
		name string
		env  []string
		ok   func(gogc float64) bool
		want string
	}{
		{"default", nil, func(g float64) bool { return g > 100 }, "above 100"},
		{"GOGC set", []string{"GOGC=100"}, func(g float64) bool { return g == 100 }, "100"},
		{"GOMEMLIMIT set", []string{"GOMEMLIMIT=1GiB"}, func(g float64) bool { return g == 100 }, "100"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tp := testproc.StartWith(t, testproc.Options{Name: "authorizer", Env: c.env}, testproc.MustBuild(t, authorizerPkg),
				"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--authority", a.addr,
				"--authority-token-file", filepath.Join(a.dataDir, "watch.token"))
			addr, conn := tp.Listening(t, 30*time.Second)
			defer conn.Close()
			z := &authorizer{proc: &proc{Proc: tp, addr: addr, conn: conn}, client: sigilv1.NewAuthorizerServiceClient(conn), health: healthpb.NewHealthClient(conn)}
			z.waitServing(t, true, 10*time.Second)
			// The floor is set after every collection; the authorizer has
			// collected by the time it serves, or the value at start applies.
			g := gogcPercent(t, scrape(t, z))
			if !c.ok(g) {
				t.Errorf("go_gc_gogc_percent = %v, want %s", g, c.want)
			}
		})
	}
}

// gogcPercent reads go_gc_gogc_percent from a /metrics page.
func gogcPercent(t *testing.T, page string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(page))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_gc_gogc_percent "); ok {
			g, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("go_gc_gogc_percent %q: %v", v, err)
			}
			return g
		}
	}
	t.Fatal("no go_gc_gogc_percent on /metrics")
	return 0
}
