// Package scale holds opt-in scale measurements against the real authority
// and authorizer binaries (see its tests and BENCHMARKS.md): a snapshot of a
// million revoked tokens, and a thousand revocation streams on one
// authority. It lives under the authority's internal tree so that it can
// fill a real store file through the store API. Every test skips itself
// unless -scale is set; nothing here runs in CI.
package scale
