package server

import (
	"context"
	"testing"
	"time"
)

// TestDrainStreams: after revocations, DrainStreams returns once the open
// stream has sent a checkpoint at the store's revision (the follower has
// it), and it counts a stream still short of a revision when its context
// ends.
func TestDrainStreams(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithCancel(withCred(watchToken))
	defer cancel()
	s := e.watch(ctx, 0, "")
	f := newFollower(t)
	recvUntil(t, s, f, func() bool { return f.epoch != "" })
	var rev uint64
	for i := range 5 {
		tok := e.mint("org-drain", "t"+string(rune('a'+i)), "alice", grant([]string{"domain:view"}))
		rev = e.revoke(tok.GetInfo().GetTokenId())
	}
	if rev != e.st.Revision() {
		t.Fatalf("last revocation at %d, store at %d", rev, e.st.Revision())
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if behind := e.srv.DrainStreams(dctx, rev); behind != 0 {
		t.Fatalf("DrainStreams(%d) = %d streams behind, want 0", rev, behind)
	}
	// What the stream sent is what the follower receives: the checkpoint
	// at rev, after every revocation.
	recvUntil(t, s, f, func() bool { return f.applied >= rev && f.digestRev >= rev })
	if len(f.revoked) != 5 {
		t.Fatalf("follower holds %d revocations, want 5", len(f.revoked))
	}

	ended, endCancel := context.WithCancel(context.Background())
	endCancel()
	if behind := e.srv.DrainStreams(ended, rev+1000); behind != 1 {
		t.Fatalf("DrainStreams beyond the store's revision = %d streams behind, want 1", behind)
	}
}
