package store

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// Records are stored in a small hand-made binary encoding rather than JSON
// or protobuf: there is no store .proto, the records are few and flat, and
// Compact and Snapshot must read hundreds of thousands of them cheaply.
//
// Every value starts with a record version byte (recordV1). Decoding is
// strict: an unknown version, an unknown enum value, a length running past
// the end or a byte left over is ErrCorrupt, never a guess. Lengths and
// counts are bounded by the bytes that remain, so a damaged record cannot
// make the decoder allocate without bound. To change a record, add a
// version and keep decoding the old one.
//
//	string, bytes  uvarint length, then the bytes
//	list           uvarint count, then the elements
//	time           0x00 for the zero time, or 0x01, varint Unix seconds,
//	               uvarint nanoseconds (< 1e9); decoded in UTC
//	revision       uvarint
const recordV1 byte = 1

// encoder appends fields to a byte slice.
type encoder struct{ b []byte }

func newEncoder(sizeHint int) *encoder {
	e := &encoder{b: make([]byte, 0, sizeHint)}
	e.b = append(e.b, recordV1)
	return e
}

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bytes(p []byte)   { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }

func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.b = append(e.b, 0)
		return
	}
	e.b = append(e.b, 1)
	e.varint(t.Unix())
	e.uvarint(uint64(t.Nanosecond()))
}

func (e *encoder) strs(ss []string) {
	e.uvarint(uint64(len(ss)))
	for _, s := range ss {
		e.str(s)
	}
}

func (e *encoder) grants(gs []scope.Grant) {
	e.uvarint(uint64(len(gs)))
	for _, g := range gs {
		e.strs(g.Permissions)
		e.strs(g.Resources)
	}
}

// decoder reads fields; the first error sticks and later reads return zero
// values, so a record decoder checks err once at the end (finish).
type decoder struct {
	what string // record kind, for error messages
	b    []byte
	err  error
}

// newDecoder checks the version byte. It returns a value, not a pointer,
// so that a decoder stays on the caller's stack.
func newDecoder(what string, v []byte) decoder {
	d := decoder{what: what, b: v}
	switch {
	case len(v) == 0:
		d.fail("empty value")
	case v[0] != recordV1:
		d.fail("unknown record version %d", v[0])
	default:
		d.b = v[1:]
	}
	return d
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s record: %s", ErrCorrupt, d.what, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

// finish returns the first error, or an error if bytes are left over.
func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) {
		d.fail("bad or non-minimal uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) {
		d.fail("bad or non-minimal varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length or element count; each unit takes at least one of
// the remaining bytes, which bounds allocation by the record's size.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("length %d exceeds the %d bytes left", n, len(d.b))
		return 0
	}
	return int(n)
}

// raw returns the next n bytes; they alias the input.
func (d *decoder) raw() []byte {
	n := d.count()
	if d.err != nil {
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

// str copies: the input may be memory-mapped bbolt pages, valid only in
// the transaction.
func (d *decoder) str() string { return string(d.raw()) }

// bytes copies; empty decodes as nil.
func (d *decoder) bytes() []byte {
	p := d.raw()
	if len(p) == 0 {
		return nil
	}
	return append([]byte(nil), p...)
}

func (d *decoder) time() time.Time {
	switch d.byte() {
	case 0:
		return time.Time{}
	case 1:
		sec := d.varint()
		nsec := d.uvarint()
		if nsec >= 1e9 {
			d.fail("nanoseconds %d out of range", nsec)
			return time.Time{}
		}
		t := time.Unix(sec, int64(nsec)).UTC()
		if t.IsZero() || t.Unix() != sec {
			d.fail("time out of range")
			return time.Time{}
		}
		return t
	default:
		if d.err == nil {
			d.fail("bad time tag")
		}
		return time.Time{}
	}
}

func (d *decoder) strs() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.str()
	}
	return ss
}

func (d *decoder) grants() []scope.Grant {
	n := d.count()
	if n == 0 {
		return nil
	}
	gs := make([]scope.Grant, n)
	for i := range gs {
		gs[i].Permissions = d.strs()
		gs[i].Resources = d.strs()
	}
	return gs
}

// ---- tokens ----

// encodeToken encodes a token record: the Token and the revision that
// created it (the listing indexes are keyed by it).
func encodeToken(t *Token, createRev uint64) []byte {
	e := newEncoder(256)
	e.str(t.ID)
	e.str(t.OrgID)
	e.str(t.Name)
	e.str(t.Description)
	e.grants(t.Grants)
	e.str(t.CreatedBy)
	e.str(t.ParentID)
	e.str(t.KeyID)
	e.time(t.CreateTime)
	e.time(t.ExpireTime)
	e.time(t.RevokeTime)
	e.str(t.RevokeReason)
	e.uvarint(t.RevokeRev)
	e.uvarint(createRev)
	return e.b
}

func decodeToken(v []byte) (t Token, createRev uint64, err error) {
	d := newDecoder("token", v)
	t.ID = d.str()
	t.OrgID = d.str()
	t.Name = d.str()
	t.Description = d.str()
	t.Grants = d.grants()
	t.CreatedBy = d.str()
	t.ParentID = d.str()
	t.KeyID = d.str()
	t.CreateTime = d.time()
	t.ExpireTime = d.time()
	t.RevokeTime = d.time()
	t.RevokeReason = d.str()
	t.RevokeRev = d.uvarint()
	createRev = d.uvarint()
	if err := d.finish(); err != nil {
		return Token{}, 0, err
	}
	return t, createRev, nil
}

// ---- keys ----

// keyMeta is what the store keeps about a key beside the Key itself.
type keyMeta struct {
	addRev   uint64 // revision of AddKey: ListKeys order
	stateRev uint64 // revision of the last change of state (or the revocation)
}

func validKeyState(s KeyState) bool { return s >= KeyPending && s <= KeyRevoked }

// keyPublic encodes the public part of a key; it is shared by key records
// and key events.
func (e *encoder) keyPublic(k *Key) {
	e.str(k.ID)
	e.uvarint(uint64(k.State))
	e.bytes(k.Public)
	e.time(k.CreateTime)
	e.time(k.ActivateTime)
	e.time(k.RevokeTime)
	e.time(k.LastExpiry)
}

func (d *decoder) keyPublic() Key {
	var k Key
	k.ID = d.str()
	s := d.uvarint()
	if s > math.MaxInt32 || !validKeyState(KeyState(s)) {
		d.fail("unknown key state %d", s)
	}
	k.State = KeyState(s)
	k.Public = d.bytes()
	k.CreateTime = d.time()
	k.ActivateTime = d.time()
	k.RevokeTime = d.time()
	k.LastExpiry = d.time()
	return k
}

func encodeKey(k *Key, m keyMeta) []byte {
	e := newEncoder(128 + len(k.SealedPrivate))
	e.keyPublic(k)
	e.bytes(k.SealedPrivate)
	e.uvarint(m.addRev)
	e.uvarint(m.stateRev)
	e.keyCut(k)
	return e.b
}

// keyCut appends a key's cut (Key.RevokedIssuedAfter) as an optional last
// field: records and events written before cuts existed end without it, and
// a key without a cut is still written the old way, byte for byte.
func (e *encoder) keyCut(k *Key) {
	if !k.RevokedIssuedAfter.IsZero() {
		e.time(k.RevokedIssuedAfter)
	}
}

// keyCut reads the optional cut at the end of a key record or event. A cut
// that is there must be a time: a zero one is never written (keyCut leaves
// it out), so reading one would give two encodings of one key.
func (d *decoder) keyCut(k *Key) {
	if d.err == nil && len(d.b) > 0 {
		k.RevokedIssuedAfter = d.time()
		if d.err == nil && k.RevokedIssuedAfter.IsZero() {
			d.fail("key cut present but zero")
		}
	}
}

func decodeKey(v []byte) (Key, keyMeta, error) {
	d := newDecoder("key", v)
	k := d.keyPublic()
	k.SealedPrivate = d.bytes()
	var m keyMeta
	m.addRev = d.uvarint()
	m.stateRev = d.uvarint()
	d.keyCut(&k)
	if err := d.finish(); err != nil {
		return Key{}, keyMeta{}, err
	}
	return k, m, nil
}

// ---- events ----

// An event value is the version byte, the kind byte, then the kind's
// fields; the kind sits at a fixed offset so that Compact and EventsAfter
// can skip events without decoding them (eventKindOf).
func encodeEvent(ev *Event) []byte {
	e := newEncoder(64)
	e.b = append(e.b, byte(ev.Kind))
	switch ev.Kind {
	case EventTokenCreated, EventTokenRevoked, EventTokenExpiring:
		e.str(ev.TokenID)
		e.time(ev.ExpiresAt)
	case EventKeyAdded:
		e.keyPublic(ev.Key)
		e.keyCut(ev.Key)
	case EventKeyRevoked:
		e.str(ev.KeyID)
	default:
		panic(fmt.Sprintf("store: encoding event of unknown kind %d", ev.Kind))
	}
	return e.b
}

// eventKindOf returns the kind of an encoded event.
func eventKindOf(v []byte) (EventKind, error) {
	if len(v) < 2 || v[0] != recordV1 || v[1] < byte(EventTokenCreated) || v[1] > byte(EventTokenExpiring) {
		return 0, fmt.Errorf("%w: event record: bad header", ErrCorrupt)
	}
	return EventKind(v[1]), nil
}

func decodeEvent(rev uint64, v []byte) (Event, error) {
	kind, err := eventKindOf(v)
	if err != nil {
		return Event{}, err
	}
	d := newDecoder("event", v)
	d.byte() // kind
	ev := Event{Revision: rev, Kind: kind}
	switch kind {
	case EventTokenCreated, EventTokenRevoked, EventTokenExpiring:
		ev.TokenID = d.str()
		ev.ExpiresAt = d.time()
	case EventKeyAdded:
		k := d.keyPublic()
		d.keyCut(&k)
		ev.Key = &k
	case EventKeyRevoked:
		ev.KeyID = d.str()
	}
	if err := d.finish(); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// ---- audit ----

// encodeAudit encodes an audit record; its revision is the key.
func encodeAudit(a *AuditRecord) []byte {
	e := newEncoder(128)
	e.time(a.Time)
	e.str(a.Actor)
	e.str(a.OrgID)
	e.varint(int64(a.Action))
	e.str(a.TokenID)
	e.str(a.Name)
	e.grants(a.Grants)
	e.str(a.Reason)
	e.varint(a.Count)
	e.str(a.KeyID)
	return e.b
}

func decodeAudit(rev uint64, v []byte) (AuditRecord, error) {
	d := newDecoder("audit", v)
	a := AuditRecord{Revision: rev}
	a.Time = d.time()
	a.Actor = d.str()
	a.OrgID = d.str()
	action := d.varint()
	if action < int64(AuditTokenCreated) || action > int64(AuditTokenExpiring) {
		d.fail("unknown audit action %d", action)
	}
	a.Action = AuditAction(action)
	a.TokenID = d.str()
	a.Name = d.str()
	a.Grants = d.grants()
	a.Reason = d.str()
	a.Count = d.varint()
	a.KeyID = d.str()
	if err := d.finish(); err != nil {
		return AuditRecord{}, err
	}
	return a, nil
}

// ---- expiry (bucketRevoked and bucketUnrevoked values) ----

func encodeExpiry(t time.Time) []byte {
	e := newEncoder(16)
	e.time(t)
	return e.b
}

func decodeExpiry(v []byte) (time.Time, error) {
	d := newDecoder("expiry", v)
	t := d.time()
	return t, d.finish()
}

// ---- meta ----

// decodeUint64 decodes an 8-byte big-endian meta value.
func decodeUint64(name string, v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: meta %s: %d bytes, want 8", ErrCorrupt, name, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
