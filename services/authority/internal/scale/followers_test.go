package scale

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

var (
	followersBDP = flag.Bool("scale.bdp", false, "followers dial with grpc-go's default dynamic windows (bandwidth-delay pings) instead of the authorizer's fixed ones")
	followersN   = flag.Int("scale.followers", 1000, "revocation streams in TestScaleFollowers")
	revocationsN = flag.Int("scale.revocations", 100, "revocations timed in TestScaleFollowers")
)

// TestScaleFollowers opens -scale.followers WatchRevocations streams on
// one real authority, each on its own loopback connection with the watch
// credential (as that many authorizers would), revokes -scale.revocations
// tokens one after another, and reports the propagation time from each
// RevokeToken reply to each stream receiving its event, and the
// authority's RSS and CPU. The per-credential stream bound and the
// connection bound are raised by flag to let them in. -scale.authority runs
// a prebuilt authority instead of this tree's, to compare two builds with
// the same test process (BENCHMARKS.md).
//
//	go test ./services/authority/internal/scale -run TestScaleFollowers -v -timeout 10m -args -scale
func TestScaleFollowers(t *testing.T) {
	skipUnlessScale(t)
	nf, nr := *followersN, *revocationsN
	dir := t.TempDir()
	a := startAuthority(t, dir, "--max-watch-streams", fmt.Sprint(nf+10), "--max-connections", fmt.Sprint(nf+100))
	client := sigilv1.NewTokenAuthorityServiceClient(a.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	op := bearer(t, ctx, dir, "operator.token")

	ids := make([]string, nr)
	index := map[string]int{}
	for i := range ids {
		resp, err := client.CreateToken(op, &sigilv1.CreateTokenRequest{
			OrgId: "org-a", Name: fmt.Sprintf("scale-%d", i), CreatedBy: "alice",
			Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/example.com"}}},
			Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(10 * 24 * time.Hour)},
		})
		if err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		ids[i] = resp.GetInfo().GetTokenId()
		index[ids[i]] = i
	}

	pid := a.PID()
	rss0, _ := memKB(t, pid)

	// got[f][i]: when stream f received revocation i.
	got := make([][]time.Time, nf)
	arrived := make([]atomic.Int32, nr)
	var synced sync.WaitGroup
	synced.Add(nf)
	var streams sync.WaitGroup
	streamErrs := make(chan error, nf)
	watch := bearer(t, ctx, dir, "watch.token")
	for f := range nf {
		got[f] = make([]time.Time, nr)
		streams.Go(func() {
			conn, err := grpc.NewClient(a.addr, followerDialOptions()...)
			if err != nil {
				streamErrs <- err
				synced.Done()
				return
			}
			defer conn.Close()
			s, err := sigilv1.NewTokenAuthorityServiceClient(conn).WatchRevocations(watch, &sigilv1.WatchRevocationsRequest{}, grpc.WaitForReady(true))
			if err != nil {
				streamErrs <- err
				synced.Done()
				return
			}
			ended, seen := false, 0
			for seen < nr {
				m, err := s.Recv()
				if err != nil {
					if !ended {
						synced.Done()
					}
					streamErrs <- fmt.Errorf("stream %d: %w", f, err)
					return
				}
				now := time.Now()
				switch ev := m.GetEvent().(type) {
				case *sigilv1.WatchRevocationsResponse_SnapshotEnd:
					if !ended {
						ended = true
						synced.Done()
					}
				case *sigilv1.WatchRevocationsResponse_TokenRevoked:
					if i, ok := index[ev.TokenRevoked.GetTokenId()]; ok && got[f][i].IsZero() {
						got[f][i] = now
						arrived[i].Add(1)
						seen++
					}
				}
			}
		})
	}
	connectStart := time.Now()
	synced.Wait()
	select {
	case err := <-streamErrs:
		t.Fatal(err)
	default:
	}
	connected := time.Since(connectStart)
	rssConnected, _ := memKB(t, pid)

	// Idle: only the checkpoints every second on every stream.
	cpu0, idle0 := cpuTime(t, pid), time.Now()
	time.Sleep(5 * time.Second)
	idleCPU := float64(cpuTime(t, pid)-cpu0) / float64(time.Since(idle0))
	resetHWM(t, pid)

	sent := make([]time.Time, nr)
	replied := make([]time.Time, nr)
	cpu1, began := cpuTime(t, pid), time.Now()
	sr1, sw1 := syscalls(t, pid)
	for i, id := range ids {
		sent[i] = time.Now()
		if _, err := client.RevokeToken(op, &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "scale"}); err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}
		replied[i] = time.Now()
		// Every stream has it before the next one: each revocation is timed
		// alone. The bound only guards against a hang.
		deadline := time.Now().Add(30 * time.Second)
		for arrived[i].Load() < int32(nf) {
			if time.Now().After(deadline) {
				t.Fatalf("revocation %d reached %d of %d streams in 30s", i, arrived[i].Load(), nf)
			}
			select {
			case err := <-streamErrs:
				t.Fatal(err)
			default:
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	wall := time.Since(began)
	cpuUsed := cpuTime(t, pid) - cpu1
	busyCPU := float64(cpuUsed) / float64(wall)
	sr2, sw2 := syscalls(t, pid)
	rss1, hwm1 := memKB(t, pid)
	streams.Wait()

	var fromReply, fromSend []time.Duration
	early := 0
	for f := range nf {
		for i := range nr {
			d := got[f][i].Sub(replied[i])
			if d < 0 {
				early++ // the event overtook the reply
			}
			fromReply = append(fromReply, d)
			fromSend = append(fromSend, got[f][i].Sub(sent[i]))
		}
	}
	slices.Sort(fromReply)
	slices.Sort(fromSend)
	t.Logf("%d streams synced in %s; authority VmRSS %d KiB before, %d KiB with the streams open (%.1f KiB per stream)",
		nf, connected.Round(time.Millisecond), rss0, rssConnected, float64(rssConnected-rss0)/float64(nf))
	t.Logf("propagation from RevokeToken's reply, %d samples: p50 %s p99 %s max %s (target p99 ≤ 50 ms); %d events arrived before the reply",
		len(fromReply), percentile(fromReply, 50), percentile(fromReply, 99), fromReply[len(fromReply)-1], early)
	t.Logf("propagation from RevokeToken's request: p50 %s p99 %s max %s", percentile(fromSend, 50), percentile(fromSend, 99), fromSend[len(fromSend)-1])
	t.Logf("authority CPU: %.2f cores idle with the streams open, %.2f cores over %d revocations (%s); VmRSS %d KiB after, peak during %d KiB",
		idleCPU, busyCPU, nr, wall.Round(time.Millisecond), rss1, hwm1)
	perSend := float64(nf * nr)
	t.Logf("authority per stream and revocation: %.1f µs CPU, %.2f write and %.2f read system calls",
		float64(cpuUsed)/float64(time.Microsecond)/perSend, float64(sw2-sw1)/perSend, float64(sr2-sr1)/perSend)
	logLoad(t)
}

// followerWindow is the authorizer's authorityWindow
// (services/authorizer/internal/app): its connections to the authority
// have fixed flow-control windows, which turn off grpc-go's
// bandwidth-delay pings.
const followerWindow = 4 << 20

// followerDialOptions dial a simulated follower as the authorizer dials
// the authority (or with grpc-go's defaults under -scale.bdp, to measure
// what the pings cost).
func followerDialOptions() []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if !*followersBDP {
		opts = append(opts, grpc.WithInitialWindowSize(followerWindow), grpc.WithInitialConnWindowSize(followerWindow))
	}
	return opts
}
