package store

import "fmt"

// A revocation too large for one transaction of the backend (etcd bounds a
// transaction's operations and size; bbolt does not, so bbolt never does
// this) is made in chunks, guarded by an intent record (metaIntent): the
// first transaction records every token to revoke, in the order
// revocationOrder gave, with the request's audit record; each following
// transaction revokes the next tokens and records how far it got; the
// last one writes the request's own audit record and deletes the intent.
// While an intent exists every writer finishes it before doing its own
// work (and a store that opens finishes it), so no mutation interleaves
// with a chunked revocation: a token cannot be minted through one of the
// tokens it is about to revoke. A crash between two chunks leaves the
// tokens of the chunks committed revoked (with their events and audit
// records), the rest unrevoked and the intent naming them: the next writer
// or Open finishes the work with the same reasons and times.

// metaIntent is the meta key of a chunked revocation in progress: the
// work, written once. metaIntentDone holds how many of its tokens are
// handled (be(n)), rewritten by each chunk, so that a chunk's transaction
// stays small however long the list is.
var (
	metaIntent     = []byte("intent")
	metaIntentDone = []byte("intent_done")
)

// bulkIntent is a chunked revocation in progress.
type bulkIntent struct {
	request AuditRecord  // the request's record: time, actor, reason
	final   *AuditRecord // written at the last revision; nil for none
	items   []intentItem // what revocationOrder returned
	done    int          // items handled so far
}

// intentItem is one token of a chunked revocation.
type intentItem struct {
	id        string
	requested bool
	cause     string
}

// tooMany reports whether revoking n tokens does not fit in one
// transaction of the backend.
func (w *writer) tooMany(n int) bool { return w.limit > 0 && n > w.limit }

// deferRevocations records order as a chunked revocation for the backend
// to carry out after this transaction commits (see bulkIntent).
func (w *writer) deferRevocations(order []revocation, a *AuditRecord, final *AuditRecord) error {
	in := &bulkIntent{request: *a, final: final, items: make([]intentItem, len(order))}
	for i, r := range order {
		in.items[i] = intentItem{id: r.t.ID, requested: r.requested, cause: r.cause}
	}
	if err := w.put(bucketMeta, metaIntent, encodeIntent(in)); err != nil {
		return err
	}
	w.deferred = in
	return nil
}

// applyIntentChunk revokes the next tokens of in until the transaction is
// full (full reports it) or the list ends; then it writes the final audit
// record and deletes the intent, or records the progress. Tokens revoked
// meanwhile (a retried chunk) are skipped.
func applyIntentChunk(w *writer, in *bulkIntent, full func() bool) error {
	for in.done < len(in.items) && (w.rev == w.start || !full()) {
		it := in.items[in.done]
		t, createRev, err := getToken(w.kv, it.id)
		if err != nil {
			return fmt.Errorf("chunked revocation: %w", err)
		}
		in.done++
		if t.RevokeRev != 0 {
			continue
		}
		if err := revokeOne(w, revocation{t: t, createRev: createRev, requested: it.requested, cause: it.cause}, &in.request); err != nil {
			return err
		}
	}
	if in.done < len(in.items) {
		return w.put(bucketMeta, metaIntentDone, be(uint64(in.done)))
	}
	if in.final != nil && w.rev != w.start {
		if err := w.audit(*in.final); err != nil {
			return err
		}
	}
	if err := w.del(bucketMeta, metaIntentDone); err != nil {
		return err
	}
	return w.del(bucketMeta, metaIntent)
}

func encodeIntent(in *bulkIntent) []byte {
	e := newEncoder(64 + 48*len(in.items))
	e.bytes(encodeAudit(&in.request))
	if in.final == nil {
		e.b = append(e.b, 0)
	} else {
		e.b = append(e.b, 1)
		e.bytes(encodeAudit(in.final))
	}
	e.uvarint(uint64(len(in.items)))
	for _, it := range in.items {
		e.str(it.id)
		if it.requested {
			e.b = append(e.b, 1)
		} else {
			e.b = append(e.b, 0)
		}
		e.str(it.cause)
	}
	return e.b
}

// decodeIntent decodes an intent record and its progress (nil: none yet).
func decodeIntent(v, done []byte) (*bulkIntent, error) {
	d := newDecoder("intent", v)
	in := &bulkIntent{}
	if done != nil {
		n, err := decodeUint64("intent progress", done)
		if err != nil {
			return nil, err
		}
		if n > uint64(len(v)) {
			return nil, fmt.Errorf("%w: intent progress %d beyond its record", ErrCorrupt, n)
		}
		in.done = int(n)
	}
	req, err := decodeAudit(0, d.bytes())
	if err != nil {
		return nil, err
	}
	in.request = req
	if d.byte() == 1 {
		f, err := decodeAudit(0, d.bytes())
		if err != nil {
			return nil, err
		}
		in.final = &f
	}
	n := d.count()
	in.items = make([]intentItem, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		it := intentItem{id: d.str()}
		it.requested = d.byte() == 1
		it.cause = d.str()
		in.items = append(in.items, it)
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	if in.done > len(in.items) {
		return nil, fmt.Errorf("%w: intent record: %d of %d done", ErrCorrupt, in.done, len(in.items))
	}
	return in, nil
}
