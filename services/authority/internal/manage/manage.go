// Package manage holds the authority's token rules, free of any transport:
// who the caller is (Authenticate), what each caller may do (Admit,
// Caller.CanManage, Caller.CheckNoEscalation), which token a request acts
// on, the creator and parent rules of minting and rotation, the retry of a
// mint that raced with a key revocation, and compaction scheduling.
//
// Errors are this package's sentinels (ErrUnauthenticated,
// ErrPermissionDenied, ErrInvalid), or store and keys errors, wrapped with
// %w; the transport maps them with errors.Is. No message holds a value the
// request controls.
package manage

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/keys"
	"github.com/sigil-auth/sigil/services/authority/internal/secrets"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// Errors of the rules, matched with errors.Is.
var (
	// ErrUnauthenticated: no credential, or one that is not valid.
	ErrUnauthenticated = errors.New("manage: unauthenticated")
	// ErrPermissionDenied: a valid credential that may not do this.
	ErrPermissionDenied = errors.New("manage: permission denied")
	// ErrInvalid: a request field breaks a rule that depends on the caller
	// (see FieldError).
	ErrInvalid = errors.New("manage: invalid argument")
)

// FieldError is an ErrInvalid naming the field and the rule (never the
// value).
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return "manage: " + e.Field + ": " + e.Reason }
func (e *FieldError) Unwrap() error { return ErrInvalid }

func denied(reason string) error { return fmt.Errorf("%w: %s", ErrPermissionDenied, reason) }

func unauthenticated(reason string) error { return fmt.Errorf("%w: %s", ErrUnauthenticated, reason) }

// ExpiryMargin keeps revocations of tokens that expired less than this ago
// in snapshots and in the event log: an authorizer accepts a token up to its
// clock leeway after expiry, and its clock may run behind ours.
const ExpiryMargin = 10 * time.Minute

// TokensPermission lets a PAT manage its organization's tokens.
const TokensPermission = "organization:tokens"

// Options are the Manager's dependencies.
type Options struct {
	Store   store.Store
	Keys    *keys.Manager
	Codec   *token.Codec
	Catalog *scope.Catalog
	// Operator is the operator credential (full control).
	Operator secrets.Credential
	// Watch is the credential authorizers present to watch revocations.
	Watch secrets.Credential
	// Reporter is the credential secret scanners present to report leaked
	// tokens (ReportLeakedTokens only); the zero Credential admits none.
	Reporter secrets.Credential
	// Dev admits anonymous watchers.
	Dev bool
	// Logger receives compaction failures; discarded when nil.
	Logger *slog.Logger
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

// Manager applies the rules to the store and the keys.
type Manager struct {
	store    store.Store
	keys     *keys.Manager
	codec    *token.Codec
	catalog  *scope.Catalog
	operator secrets.Credential
	watch    secrets.Credential
	reporter secrets.Credential
	dev      bool
	logger   *slog.Logger
	now      func() time.Time
}

// New returns a Manager; Store, Keys, Codec and Catalog are required.
func New(o Options) (*Manager, error) {
	if o.Store == nil || o.Keys == nil || o.Codec == nil || o.Catalog == nil {
		return nil, errors.New("manage: store, keys, codec and catalog are required")
	}
	m := &Manager{
		store: o.Store, keys: o.Keys, codec: o.Codec, catalog: o.Catalog,
		operator: o.Operator, watch: o.Watch, reporter: o.Reporter, dev: o.Dev, logger: o.Logger, now: o.Now,
	}
	if m.logger == nil {
		m.logger = slog.New(slog.DiscardHandler)
	}
	if m.now == nil {
		m.now = time.Now
	}
	return m, nil
}

// Now is the Manager's clock.
func (m *Manager) Now() time.Time { return m.now() }
