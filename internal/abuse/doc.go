// Package abuse holds tests that drive both real binaries (built by
// internal/testproc, on loopback) with what a hostile or broken client
// sends: TestBadInputIsNeverAnError runs on every test run; the abuse
// measurement (TestAbuse) only with -abuse, and reports peak memory and
// goroutines for BENCHMARKS.md.
package abuse
