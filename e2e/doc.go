// Package e2e holds the tests that run Sigil as a new user does: the
// quick-start command from a clean copy of the repository, and the README's
// grpcurl walkthrough against freshly started binaries.
package e2e
