package grpcserver

import (
	"context"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestRPCMetricsFamilies pins the RPC metrics dashboards and alerts rely
// on, with the names, labels and semantics of go-grpc-middleware's
// Prometheus provider: after one OK unary call and one failed one, each
// family holds the right series and counts.
func TestRPCMetricsFamilies(t *testing.T) {
	f := start(t, &panicHealth{block: make(chan struct{})})
	ctx := context.Background()
	if _, err := healthpb.NewHealthClient(f.conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := healthpb.NewHealthClient(f.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"}); err == nil {
		t.Fatal("unknown service: no error")
	}
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]int{} // name -> index in mfs
	for i, mf := range mfs {
		families[mf.GetName()] = i
	}
	check := map[string]string{"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
	value := func(name string, extra map[string]string) float64 {
		t.Helper()
		i, ok := families[name]
		if !ok {
			t.Fatalf("%s not exported", name)
		}
		mf := mfs[i]
	metrics:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if len(labels) != len(check)+len(extra) {
				t.Fatalf("%s labels %v", name, labels)
			}
			for k, v := range check {
				if labels[k] != v {
					continue metrics
				}
			}
			for k, v := range extra {
				if labels[k] != v {
					continue metrics
				}
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
		t.Fatalf("%s has no series %v %v", name, check, extra)
		return 0
	}
	for _, tc := range []struct {
		name  string
		extra map[string]string
		want  float64
	}{
		{"grpc_server_started_total", nil, 2},
		{"grpc_server_msg_received_total", nil, 2},
		{"grpc_server_msg_sent_total", nil, 1}, // only the OK call answered
		{"grpc_server_handled_total", map[string]string{"grpc_code": "OK"}, 1},
		{"grpc_server_handled_total", map[string]string{"grpc_code": "NotFound"}, 1},
		{"grpc_server_handled_total", map[string]string{"grpc_code": "Internal"}, 0}, // zero series exist
		{"grpc_server_handling_seconds", nil, 2},
	} {
		if got := value(tc.name, tc.extra); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.extra, got, tc.want)
		}
	}
}
