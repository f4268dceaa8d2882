package store

import (
	"bytes"
	"encoding/binary"
)

// schemaVersion is the layout of the file: buckets, keys and record
// encodings. Open refuses any other value.
const schemaVersion = 1

// Every bucket of the file, declared here and nowhere else. All are
// top-level buckets created when the file is made.
var (
	// bucketMeta holds the scalars below (metaEpoch, ...).
	bucketMeta = []byte("meta")
	// bucketTokens maps a token id to its record (tokenRecord).
	bucketTokens = []byte("tokens")
	// bucketTokenNames maps lp(org)+lp(name) to the id of the token that
	// last took the name. The token may since have been revoked or have
	// expired: CreateToken checks its state and takes the name over.
	bucketTokenNames = []byte("token_names")
	// bucketTokensByOrg indexes every token for ListTokens:
	// lp(org) + be(createRev) + id → empty. ListTokens walks it backwards
	// (newest first); ascending keys make every insert an append within the
	// organization's range, which keeps pages full (seqFillPercent).
	bucketTokensByOrg = []byte("tokens_by_org")
	// bucketTokensByCreator is the same per creator:
	// lp(org) + lp(createdBy) + be(createRev) + id → empty.
	bucketTokensByCreator = []byte("tokens_by_creator")
	// bucketUnrevoked holds the tokens not revoked yet, for bulk revocation
	// without reading revoked ones: lp(org) + lp(createdBy) + id → expiry.
	bucketUnrevoked = []byte("tokens_unrevoked")
	// bucketRevoked holds revoked tokens until they expire, for Snapshot
	// (Compact prunes expired ones): id → expiry.
	bucketRevoked = []byte("tokens_revoked")
	// bucketTokensByParent indexes every token minted through another, for
	// the revocation cascade: lp(parentID) + id → empty. Entries stay when
	// either token is revoked, as in the listing indexes.
	bucketTokensByParent = []byte("tokens_by_parent")
	// bucketKeys maps a signing key id to its record (keyRecord).
	bucketKeys = []byte("keys")
	// bucketEvents is the revision log: be(revision) → eventRecord.
	bucketEvents = []byte("events")
	// bucketAudit is the append-only audit log: be(revision) → auditRecord.
	bucketAudit = []byte("audit")
	// bucketAuditByOrg indexes the audit log: lp(org) + be(revision) → empty.
	bucketAuditByOrg = []byte("audit_by_org")
)

// Webhook buckets (outbox.go, notice.go), added to files made before them
// as empty buckets (laterBuckets).
var (
	// bucketOutbox holds the webhook events waiting for delivery:
	// be(seq) → outbox entry record.
	bucketOutbox = []byte("webhook_outbox")
	// bucketOutboxFailed holds the webhook events given up on, the same way.
	bucketOutboxFailed = []byte("webhook_failed")
	// bucketExpiryNotices records the expiry notices sent: token id → the
	// shortest lead time noticed (be(nanoseconds)).
	bucketExpiryNotices = []byte("expiry_notices")
)

// allBuckets lists every bucket, for creation and for the open-time check.
var allBuckets = [][]byte{
	bucketMeta, bucketTokens, bucketTokenNames, bucketTokensByOrg,
	bucketTokensByCreator, bucketUnrevoked, bucketRevoked, bucketKeys,
	bucketEvents, bucketAudit, bucketAuditByOrg, bucketTokensByParent,
	bucketOutbox, bucketOutboxFailed, bucketExpiryNotices,
}

// laterBuckets are buckets a file made before them lacks and gets, empty,
// when opened.
var laterBuckets = [][]byte{bucketOutbox, bucketOutboxFailed, bucketExpiryNotices}

// isLaterBucket reports whether name is one of laterBuckets.
func isLaterBucket(name []byte) bool {
	for _, b := range laterBuckets {
		if bytes.Equal(b, name) {
			return true
		}
	}
	return false
}

// Keys of bucketMeta.
var (
	metaSchema    = []byte("schema")    // be(schemaVersion)
	metaEpoch     = []byte("epoch")     // 32 lower-case hex characters
	metaRevision  = []byte("revision")  // be(last assigned revision)
	metaCompacted = []byte("compacted") // be(compaction floor)
)

// be returns v as 8 big-endian bytes, so that byte order is numeric order.
func be(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

// lp appends s length-prefixed (uvarint length, then the bytes). Index keys
// are made of lp components, so no component can run into the next one
// whatever bytes org ids, names or creators hold: lp(a)+lp(b) is a prefix of
// lp(c)+... only when a == c.
func lp(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// nameKey is the bucketTokenNames key of an organization's token name.
func nameKey(org, name string) []byte {
	return lp(lp(nil, org), name)
}

// orgPrefix is the prefix of an organization's entries in bucketTokensByOrg
// and bucketUnrevoked, and of its audit index.
func orgPrefix(org string) []byte {
	return lp(nil, org)
}

// creatorPrefix is the prefix of one creator's entries in
// bucketTokensByCreator and bucketUnrevoked.
func creatorPrefix(org, createdBy string) []byte {
	return lp(lp(nil, org), createdBy)
}

// listKey appends the ordering part of a listing key to prefix: the
// creation revision and the token id (the key's last component, so it needs
// no length prefix).
func listKey(prefix []byte, createRev uint64, id string) []byte {
	k := make([]byte, 0, len(prefix)+8+len(id))
	k = append(k, prefix...)
	k = binary.BigEndian.AppendUint64(k, createRev)
	return append(k, id...)
}

// byOrgKey is a token's bucketTokensByOrg key.
func byOrgKey(org string, createRev uint64, id string) []byte {
	return listKey(orgPrefix(org), createRev, id)
}

// byCreatorKey is a token's bucketTokensByCreator key.
func byCreatorKey(org, createdBy string, createRev uint64, id string) []byte {
	return listKey(creatorPrefix(org, createdBy), createRev, id)
}

// prefixEnd returns the smallest key greater than every key that starts
// with p, or nil when there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// seqFillPercent is the bbolt FillPercent of buckets whose keys only grow
// (within a range): revision-keyed logs and the listing indexes. bbolt
// splits a full page at its bucket's FillPercent, 50% by default; pages that
// are never written again after the split would stay half empty. etcd uses
// 0.9 for its revision-keyed bucket too.
const seqFillPercent = 0.9

// sequential reports whether a bucket gets seqFillPercent.
func sequential(bucket []byte) bool {
	for _, b := range [][]byte{bucketEvents, bucketDigests, bucketAudit, bucketAuditByOrg, bucketTokensByOrg, bucketTokensByCreator} {
		if bytes.Equal(b, bucket) {
			return true
		}
	}
	return false
}

// unrevokedKey is a token's bucketUnrevoked key.
func unrevokedKey(org, createdBy, id string) []byte {
	return append(creatorPrefix(org, createdBy), id...)
}

// childKey is a token's bucketTokensByParent key.
func childKey(parentID, id string) []byte {
	return append(lp(nil, parentID), id...)
}

// auditOrgKey is an audit record's bucketAuditByOrg key.
func auditOrgKey(org string, rev uint64) []byte {
	return binary.BigEndian.AppendUint64(orgPrefix(org), rev)
}
