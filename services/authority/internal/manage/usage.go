package manage

import (
	"context"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// ReportTokenUse records when tokens were last used, as an authorizer saw
// them (the watch credential, or the operator). Uses of unknown tokens,
// and uses not later than the recorded one, are skipped; it returns how
// many were recorded. A use takes no revision: it is not an event of the
// revocation stream.
func (m *Manager) ReportTokenUse(ctx context.Context, c *Caller, uses []store.TokenUse) (int, error) {
	if err := m.Admit(c, AccessWatch); err != nil {
		return 0, err
	}
	return m.store.RecordTokenUse(ctx, uses)
}
