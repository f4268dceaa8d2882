package store

import (
	"context"
	"errors"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestQueuedWriteOfAGoneCallerWritesNothing: a commit stalls (as on a
// frozen disk) while another mint queues behind it; that caller's deadline
// passes; when the disk comes back, the stalled commit completes and the
// queued mint writes nothing (no token nobody holds the secret of), while
// a mint whose caller still waits commits.
func TestQueuedWriteOfAGoneCallerWritesNothing(t *testing.T) {
	s := openTest(t)
	release := make(chan struct{})
	stalled := make(chan struct{})
	first := true
	s.commit = func(fn func(*bolt.Tx) error) error {
		return s.group.update(func(tx *bolt.Tx) error {
			if first {
				first = false
				close(stalled)
				<-release // the "fsync" of the first commit hangs
			}
			return fn(tx)
		})
	}
	inFlight, gone, patient := tok("o", "in-flight", "u", time.Hour), tok("o", "gone", "u", time.Hour), tok("o", "patient", "u", time.Hour)
	errs := make(chan error, 3)
	go func() {
		_, err := s.CreateToken(context.Background(), inFlight, auditFor(AuditTokenCreated, t0))
		errs <- err
	}()
	<-stalled
	goneCtx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	go func() {
		_, err := s.CreateToken(goneCtx, gone, auditFor(AuditTokenCreated, t0))
		errs <- err
	}()
	go func() {
		_, err := s.CreateToken(context.Background(), patient, auditFor(AuditTokenCreated, t0))
		errs <- err
	}()
	<-goneCtx.Done()
	close(release)
	var deadlineErrs int
	for range 3 {
		if err := <-errs; err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("CreateToken: %v", err)
			}
			deadlineErrs++
		}
	}
	if deadlineErrs != 1 {
		t.Fatalf("%d mints failed with the deadline, want exactly the one whose caller gave up", deadlineErrs)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		tk   Token
		want bool
	}{{inFlight, true}, {gone, false}, {patient, true}} {
		_, err := s.GetToken(ctx, tc.tk.ID)
		if got := err == nil; got != tc.want {
			t.Errorf("token %q stored = %v (%v), want %v", tc.tk.Name, got, err, tc.want)
		}
	}
}
