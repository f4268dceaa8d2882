package storetest

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

func testAddKey(t *testing.T, open Opener) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		key  store.Key
		want error
	}{
		{"pending", store.Key{ID: "k2", State: store.KeyPending, Public: []byte{1, 2}, SealedPrivate: []byte("s")}, nil},
		{"verify-only", store.Key{ID: "k2", State: store.KeyVerifyOnly, Public: []byte{1, 2}}, nil},
		{"exists", store.Key{ID: testKeyID, State: store.KeyPending, Public: []byte{1}}, store.ErrKeyExists},
		{"revoked", store.Key{ID: "k2", State: store.KeyRevoked, Public: []byte{1}}, store.ErrInvalid},
		{"no state", store.Key{ID: "k2", Public: []byte{1}}, store.ErrInvalid},
		{"no id", store.Key{State: store.KeyPending, Public: []byte{1}}, store.ErrInvalid},
		{"no public key", store.Key{ID: "k2", State: store.KeyPending}, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, open)
			before := s.Revision()
			rev, err := s.AddKey(ctx, tc.key, store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditKeyRotated})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err != nil {
				if s.Revision() != before {
					t.Error("a refused AddKey wrote")
				}
				return
			}
			if rev != before+1 {
				t.Errorf("revision %d, want %d", rev, before+1)
			}
			evs, err := s.EventsAfter(ctx, before, 10)
			if err != nil || len(evs) != 1 || evs[0].Kind != store.EventKeyAdded || evs[0].Key == nil {
				t.Fatalf("events %+v, %v", evs, err)
			}
			if k := evs[0].Key; k.ID != "k2" || k.State != tc.key.State || !bytes.Equal(k.Public, tc.key.Public) || k.SealedPrivate != nil {
				t.Errorf("event key %+v: want the public part only", k)
			}
			recs, err := listAuditAfter(ctx, s, "", before, 10)
			if err != nil || len(recs) != 1 || recs[0].KeyID != "k2" || recs[0].Revision != rev {
				t.Errorf("audit %+v, %v", recs, err)
			}
		})
	}
}

func testSetKeyState(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	if _, err := s.AddKey(ctx, store.Key{ID: "k2", State: store.KeyPending, Public: []byte{2}}, auditFor(store.AuditKeyRotated, t0)); err != nil {
		t.Fatal(err)
	}
	addTestKey(t, s, "gone")
	if _, err := s.RevokeKey(ctx, "gone", auditFor(store.AuditKeyRevoked, t0)); err != nil {
		t.Fatal(err)
	}
	var activatedAt uint64
	for _, tc := range []struct {
		name    string
		id      string
		state   store.KeyState
		want    error
		noWrite bool
	}{
		{name: "activate", id: "k2", state: store.KeyActive},
		{name: "same state again", id: "k2", state: store.KeyActive, noWrite: true},
		{name: "demote", id: testKeyID, state: store.KeyVerifyOnly},
		{name: "unknown", id: "nope", state: store.KeyActive, want: store.ErrNotFound},
		{name: "revoked key", id: "gone", state: store.KeyActive, want: store.ErrKeyRevoked},
		{name: "to revoked", id: "k2", state: store.KeyRevoked, want: store.ErrInvalid},
		{name: "to nothing", id: "k2", state: 0, want: store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Revision()
			rev, err := s.SetKeyState(ctx, tc.id, tc.state)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want != nil || tc.noWrite {
				if s.Revision() != before {
					t.Error("wrote")
				}
				if tc.noWrite && rev != activatedAt {
					t.Errorf("revision %d, want that of the change, %d", rev, activatedAt)
				}
				return
			}
			if rev != before+1 {
				t.Fatalf("revision %d, want %d", rev, before+1)
			}
			if tc.id == "k2" {
				activatedAt = rev
			}
			evs, err := s.EventsAfter(ctx, before, 10)
			if err != nil || len(evs) != 1 || evs[0].Kind != store.EventKeyAdded || evs[0].Key.State != tc.state || evs[0].Key.ID != tc.id {
				t.Errorf("events %+v, %v", evs, err)
			}
			recs, err := listAuditAfter(ctx, s, "", before, 10)
			if err != nil || len(recs) != 1 || recs[0].Actor != store.ActorSystem || recs[0].Action != store.AuditKeyRotated || recs[0].KeyID != tc.id {
				t.Errorf("audit %+v, %v", recs, err)
			}
		})
	}
}

func testRevokeKey(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	at := t0.Add(time.Minute)
	rev, err := s.RevokeKey(ctx, testKeyID, store.AuditRecord{Time: at, Actor: "operator", Action: store.AuditKeyRevoked, Reason: "compromised"})
	if err != nil {
		t.Fatal(err)
	}
	if rev != s.Revision() {
		t.Errorf("revision %d, store at %d", rev, s.Revision())
	}
	for _, tc := range []struct {
		name    string
		id      string
		a       store.AuditRecord
		want    error
		wantRev uint64
	}{
		{"again returns the original revision", testKeyID, auditFor(store.AuditKeyRevoked, at.Add(time.Hour)), nil, rev},
		{"unknown", "nope", auditFor(store.AuditKeyRevoked, at), store.ErrNotFound, 0},
		{"zero time", testKeyID, store.AuditRecord{}, store.ErrInvalid, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Revision()
			got, err := s.RevokeKey(ctx, tc.id, tc.a)
			if !errors.Is(err, tc.want) || got != tc.wantRev {
				t.Errorf("= %d, %v; want %d, %v", got, err, tc.wantRev, tc.want)
			}
			if s.Revision() != before {
				t.Error("wrote")
			}
		})
	}
	keys, err := s.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if keys[0].State != store.KeyRevoked || !keys[0].RevokeTime.Equal(at) {
		t.Errorf("key %+v", keys[0])
	}
	evs, err := s.EventsAfter(ctx, rev-1, 10)
	if err != nil || len(evs) != 1 || evs[0].Kind != store.EventKeyRevoked || evs[0].KeyID != testKeyID {
		t.Errorf("events %+v, %v", evs, err)
	}
}

func testListKeys(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	// Ids that sort against the order of addition.
	for _, id := range []string{"zz", "aa", "mm"} {
		addTestKey(t, s, id)
	}
	keys, err := s.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, k.ID)
		if string(k.SealedPrivate) != "sealed-"+k.ID {
			t.Errorf("key %s: sealed private %q", k.ID, k.SealedPrivate)
		}
	}
	if want := []string{testKeyID, "zz", "aa", "mm"}; !slices.Equal(ids, want) {
		t.Errorf("order %v, want %v", ids, want)
	}
	// The result is the caller's: changing it does not change the store.
	keys[0].SealedPrivate[0] = 'X'
	again, _ := s.ListKeys(ctx)
	if again[0].SealedPrivate[0] != 's' {
		t.Error("ListKeys returned memory the store keeps")
	}
}
