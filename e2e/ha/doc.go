// Package ha is the high-availability end-to-end suite: real processes on
// 127.0.0.1 only — three etcd members (deploy/etcd, through
// internal/etcdcluster), two authority replicas with --store etcd on all
// three endpoints, and authorizers — under a bounded mixed
// mint/revoke/check load while etcd members are killed with SIGKILL (one:
// writes go on; two: writes answer UNAVAILABLE with a clear message), come
// back, and everything is restarted. After each step every acknowledged
// mutation must still be there and revisions never go backwards.
//
// TestHA/replica_failover kills an authority replica under authorizers
// started with --authority A,B (authorizer failover); TestHA's other
// subtests need only one address per authorizer.
//
//	go test -count=1 ./e2e/ha/                        # the suite (20–50 s)
//	go test -count=1 -run TestHA/replica_failover ./e2e/ha/
//	go test -count=1 -v -run TestBenchStores -timeout 30m ./e2e/ha/ -args -ha.bench
//	go test -count=1 -v -run TestBenchFailover -timeout 30m ./e2e/ha/ -args -ha.bench -ha.failovers=50
package ha
