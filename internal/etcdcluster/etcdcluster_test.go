package etcdcluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/etcdcluster"
)

// TestQuorumLossAndReturn checks the harness against etcd's own promise: one
// member killed, writes go on; two killed, writes fail; both back, the
// cluster is healthy and every acknowledged write is there.
func TestQuorumLossAndReturn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd processes")
	}
	c := etcdcluster.Start(t, 3)
	cli := c.Client()
	put := func(k string, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := cli.Put(ctx, k, "v")
		return err
	}
	acked := map[string]bool{}
	for i := range 5 {
		k := fmt.Sprintf("k%d", i)
		if err := put(k, 10*time.Second); err != nil {
			t.Fatalf("put with 3 members: %v", err)
		}
		acked[k] = true
	}

	c.Members[0].Kill()
	if c.Members[0].Running() {
		t.Fatal("member 0 runs after Kill")
	}
	// Killing the leader makes the other two elect one: a put during the
	// election may time out (unacknowledged), so each is retried, within
	// a bound, until the two members take it.
	for i := range 5 {
		k := fmt.Sprintf("one-down-%d", i)
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := put(k, 5*time.Second)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("put with 2 of 3 members: %v", err)
			}
		}
		acked[k] = true
	}

	c.Members[1].Kill()
	if err := put("no-quorum", 2*time.Second); err == nil {
		t.Fatal("put with 1 of 3 members succeeded")
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer hcancel()
	if err := c.Members[2].Healthy(hctx); err == nil {
		t.Fatal("the last member reports healthy without a quorum")
	}

	c.Members[0].Restart()
	c.Members[1].Restart()
	if err := c.WaitHealthy(time.Minute); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for k := range acked {
		resp, err := cli.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 {
			t.Errorf("acknowledged key %s lost", k)
		}
	}
}
