package follower

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
)

func digestOf(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// The follower keeps the digest of the last snapshot end or checkpoint and
// sends it back with that revision when it reconnects; events applied
// after it are replayed, and applied is set back so that a min_revision
// wait is not met by events the authority may no longer have.
func TestFollowerKeepsAndSendsDigest(t *testing.T) {
	h := start(t)
	s := h.next(t)
	t1 := tid(t)
	s.Send(t,
		chunk("e1", 10, []*sigilv1.SigningKey{key("k1", active, pubKey(t))}, revokedTok(0, t1, t0.Add(time.Hour))),
		authoritytest.SnapshotEndDigest("e1", 10, digestOf(1)),
	)
	h.waitRev(t, 10)
	if d, r := h.f.Digest(); r != 10 || !bytes.Equal(d, digestOf(1)) {
		t.Fatalf("after snapshot: digest at %d = %x", r, d)
	}
	t2 := tid(t)
	s.Send(t, evRevoked(11, t2, t0.Add(time.Hour)), authoritytest.CheckpointDigest(12, t0, digestOf(2)))
	h.waitRev(t, 12)
	if d, r := h.f.Digest(); r != 12 || !bytes.Equal(d, digestOf(2)) {
		t.Fatalf("after checkpoint: digest at %d = %x", r, d)
	}
	// An event after the last checkpoint, then the stream breaks.
	t3 := tid(t)
	s.Send(t, evRevoked(13, t3, t0.Add(time.Hour)))
	h.waitRev(t, 13)
	s.End(status.Error(codes.Unavailable, "gone"))

	s2 := h.next(t)
	if s2.Req.GetAfterRevision() != 12 || s2.Req.GetEpoch() != "e1" || !bytes.Equal(s2.Req.GetAfterDigest(), digestOf(2)) {
		t.Fatalf("resume request = %v, want after_revision 12, epoch e1 and the digest at 12", s2.Req)
	}
	if got := h.f.Revision(); got != 12 {
		t.Fatalf("applied revision while resuming = %d, want 12 (set back to the digest's revision)", got)
	}
	// The replayed event is applied again, not dropped as a duplicate.
	t4 := tid(t)
	s2.Send(t, evRevoked(13, t4, t0.Add(time.Hour)), authoritytest.CheckpointDigest(13, t0, digestOf(3)))
	h.waitRev(t, 13)
	if !isRevoked(h.f, t4) || !isRevoked(h.f, t1) || !isRevoked(h.f, t2) {
		t.Fatal("replayed event not applied, or state lost")
	}

	// A checkpoint without a digest (an older authority): the next resume
	// sends none, so a current authority answers with a snapshot.
	s2.Send(t, authoritytest.CheckpointDigest(14, t0, nil))
	h.waitRev(t, 14)
	s2.End(status.Error(codes.Unavailable, "gone"))
	s3 := h.next(t)
	if s3.Req.GetAfterRevision() != 14 || len(s3.Req.GetAfterDigest()) != 0 {
		t.Fatalf("request after a digest-less checkpoint = %v, want after_revision 14 and no digest", s3.Req)
	}
}

// A key's cut reaches InspectCut; a later cut or none never widens it.
func TestFollowerKeyCut(t *testing.T) {
	h := start(t)
	s, _ := syncBasic(t, h)
	pub := pubKey(t)
	cut := t0.Add(-time.Hour)
	k := key("k7", sigilv1.SigningKeyState_SIGNING_KEY_STATE_VERIFY_ONLY, pub)
	k.RevokedIssuedAfter = timestamppb.New(cut)
	s.Send(t, evKeyAdded(11, k), checkpoint(11))
	h.waitRev(t, 11)
	check := func(want time.Time) {
		t.Helper()
		_, known, revoked, got, _, _ := h.f.InspectCut("k7", tid(t))
		if !known || revoked || !got.Equal(want) {
			t.Fatalf("k7: known %v revoked %v cut %v, want cut %v", known, revoked, got, want)
		}
	}
	check(cut)
	later := key("k7", sigilv1.SigningKeyState_SIGNING_KEY_STATE_VERIFY_ONLY, pub)
	later.RevokedIssuedAfter = timestamppb.New(cut.Add(time.Hour))
	s.Send(t, evKeyAdded(12, later), evKeyAdded(13, key("k7", sigilv1.SigningKeyState_SIGNING_KEY_STATE_VERIFY_ONLY, pub)), checkpoint(13))
	h.waitRev(t, 13)
	check(cut)
	// A cut we cannot read revokes the key.
	bad := key("k8", active, pubKey(t))
	bad.RevokedIssuedAfter = &timestamppb.Timestamp{Seconds: -1 << 62}
	s.Send(t, evKeyAdded(14, bad), checkpoint(14))
	h.waitRev(t, 14)
	if known, revoked := keyState(h.f, "k8"); !known || !revoked {
		t.Fatalf("k8 with a malformed cut: known %v revoked %v, want revoked", known, revoked)
	}
}
