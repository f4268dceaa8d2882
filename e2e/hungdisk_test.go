package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// frozenDisk is an ext4 file system on a loop device that the test can
// freeze (fsfreeze) as a hung disk would.
type frozenDisk struct {
	dir    string
	frozen bool
}

// mountFreezable mounts a small ext4 image on a loop device. It skips,
// saying why, where that is impossible: it needs root, loop devices,
// mkfs.ext4 and fsfreeze (CI runs as root on a machine with all four).
func mountFreezable(t *testing.T) *frozenDisk {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: freezing a file system needs root (mount -o loop, fsfreeze)")
	}
	for _, tool := range []string{"mkfs.ext4", "fsfreeze", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := exec.LookPath("/usr/sbin/" + tool); err != nil {
				t.Skipf("skipped: %s is not installed (Debian: e2fsprogs, util-linux, mount)", tool)
			}
		}
	}
	base := t.TempDir()
	img, dir := filepath.Join(base, "disk.img"), filepath.Join(base, "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("truncate", "-s", "64M", img).CombinedOutput(); err != nil {
		t.Fatalf("truncate: %v: %s", err, out)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot mount a loop device here (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	d := &frozenDisk{dir: dir}
	t.Cleanup(func() {
		if d.frozen {
			_ = exec.Command("fsfreeze", "-u", dir).Run()
		}
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return d
}

func (d *frozenDisk) freeze(t *testing.T, on bool) {
	t.Helper()
	arg := "-u"
	if on {
		arg = "-f"
	}
	if out, err := exec.Command("fsfreeze", arg, d.dir).CombinedOutput(); err != nil {
		t.Fatalf("fsfreeze %s: %v: %s", arg, err, out)
	}
	d.frozen = on
}

// TestHungDisk freezes the file system under a running authority: within
// --write-probe-timeout its health turns NOT_SERVING and the log says
// writes are stalled; a mint made then is refused at once, UNAVAILABLE
// saying writes are stalled, and once the disk thaws it has written
// nothing (the same name mints again); health comes back SERVING, and
// what was acknowledged before the freeze is intact. (A mint queued
// behind the frozen commit before the stall was detected writes nothing
// either once its caller gave up: store.TestQueuedWriteOfAGoneCallerWritesNothing.)
func TestHungDisk(t *testing.T) {
	disk := mountFreezable(t)
	data := filepath.Join(disk.dir, "data")
	p, addr, conn := grpcProc(t, "authority", bin(t, "authority"), "--listen", "127.0.0.1:0", "--metrics-listen", "",
		"--data-dir", data, "--shutdown-timeout", "5s", "--write-probe-interval", "200ms", "--write-probe-timeout", "1s")
	client := sigilv1.NewTokenAuthorityServiceClient(conn)
	opTok, err := os.ReadFile(filepath.Join(data, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	op := func(timeout time.Duration) (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(opTok))), cancel
	}
	mint := func(name string, timeout time.Duration) error {
		ctx, cancel := op(timeout)
		defer cancel()
		_, err := client.CreateToken(ctx, &sigilv1.CreateTokenRequest{
			OrgId: "org-disk", Name: name, CreatedBy: "alice",
			Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
			Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(7 * 24 * time.Hour)},
		})
		return err
	}
	if err := mint("before", 10*time.Second); err != nil {
		t.Fatalf("mint before the freeze: %v", err)
	}
	if err := testproc.WaitServing(addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	disk.freeze(t, true)
	if _, err := p.WaitLine(20*time.Second, func(l string) bool { return strings.Contains(l, "store writes stalled") }); err != nil {
		t.Fatalf("no 'store writes stalled' line after the freeze: %v", err)
	}
	if st := healthOf(t, conn); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health with the disk frozen: %v, want NOT_SERVING", st)
	}
	// Once the probe found the stall, a write is refused at once with a
	// hint, instead of queueing behind the frozen commit until its
	// caller's deadline.
	if err := mint("during", 5*time.Second); status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "stalled") {
		t.Fatalf("mint with the disk frozen: %v, want UNAVAILABLE saying writes are stalled", err)
	}
	disk.freeze(t, false)

	if _, err := p.WaitLine(20*time.Second, func(l string) bool { return strings.Contains(l, "store writes commit again") }); err != nil {
		t.Fatalf("no 'store writes commit again' line after the thaw: %v", err)
	}
	if err := testproc.WaitServing(addr, 10*time.Second); err != nil {
		t.Fatalf("after the thaw: %v", err)
	}
	ctx, cancel := op(10 * time.Second)
	defer cancel()
	list, err := client.ListTokens(ctx, &sigilv1.ListTokensRequest{OrgId: "org-disk"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ti := range list.GetTokens() {
		names = append(names, ti.GetName())
	}
	if len(names) != 1 || names[0] != "before" {
		t.Fatalf("tokens after the thaw: %v, want only [before] (the timed-out mint must write nothing)", names)
	}
	if err := mint("during", 10*time.Second); err != nil {
		t.Fatalf("minting the timed-out name again: %v, want OK", err)
	}
	if err := p.Stop(20 * time.Second); err != nil {
		t.Errorf("authority stop: %v", err)
	}
}

// healthOf asks the server's overall health.
func healthOf(t *testing.T, conn *grpc.ClientConn) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	return resp.GetStatus()
}

// TestFullDisk fills the file system under a running authority: mints
// then fail UNAVAILABLE with a message saying the disk is full (never
// INTERNAL), nothing half-written remains, and once space is freed the
// same names mint. It needs root to mount a small tmpfs and skips, saying
// why, without it.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting a small file system to fill needs root")
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot mount a tmpfs here (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	data := filepath.Join(dir, "data")
	_, _, conn := grpcProc(t, "authority", bin(t, "authority"), "--listen", "127.0.0.1:0", "--metrics-listen", "",
		"--data-dir", data, "--shutdown-timeout", "5s", "--write-probe-interval", "0")
	client := sigilv1.NewTokenAuthorityServiceClient(conn)
	opTok, err := os.ReadFile(filepath.Join(data, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	mint := func(name string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(opTok)))
		_, err := client.CreateToken(ctx, &sigilv1.CreateTokenRequest{
			OrgId: "org-full", Name: name, CreatedBy: "alice", Description: strings.Repeat("d", 1000),
			Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
			Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(7 * 24 * time.Hour)},
		})
		return err
	}
	if err := mint("first"); err != nil {
		t.Fatalf("mint before filling the disk: %v", err)
	}
	// Fill what is left, then mint until the store needs a page it cannot get.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	var failed error
	var minted []string
	for i := range 2000 {
		name := fmt.Sprintf("fill-%d", i)
		if err := mint(name); err != nil {
			failed = err
			break
		}
		minted = append(minted, name)
	}
	if failed == nil {
		t.Fatal("2000 mints on a full disk all succeeded")
	}
	if status.Code(failed) != codes.Unavailable || !strings.Contains(status.Convert(failed).Message(), "disk is full") {
		t.Fatalf("mint on a full disk: %v, want UNAVAILABLE saying the disk is full", failed)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// The refused mint left nothing behind: its name mints now.
	if err := mint(fmt.Sprintf("fill-%d", len(minted))); err != nil {
		t.Fatalf("minting the refused name once space is freed: %v", err)
	}
}
