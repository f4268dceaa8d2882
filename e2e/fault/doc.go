// Package fault is the fault-injection suite: the real authority and
// authorizer binaries, joined through internal/faultproxy, under a mixed
// mint/revoke/check load while the link is paused, cut, blackholed or
// delayed, a process is stopped (SIGSTOP) or killed (-9), or the
// authority is restored from a backup (followed by the operator procedure
// of docs/operations.md); after each scenario the recorded history is
// checked against the invariants of invariants_test.go. Everything runs on
// 127.0.0.1.
//
// The clock-step scenario needs the authorizer in process, with a wall
// clock the test steps (app.Options.Now), which Go's internal-package rule
// allows only under services/authorizer: it is
// services/authorizer/internal/app.TestClockStep (the real authority
// binary, the fault proxy, ±1h steps while fresh and while stale).
//
//	go test -race -count=1 ./e2e/fault/                       # CI: seconds per scenario
//	go test -count=1 ./e2e/fault/ -run 'TestFaults/proxy/pause' -v
//	go test -count=1 -timeout 60m ./e2e/fault/ -args -fault.long   # soak
//	go test -count=1 ./e2e/fault/ -args -fault.known          # also the known gaps
//	go test -count=1 ./e2e/fault/ -args -fault.seed=N -fault.dump  # replay, log the history
package fault
