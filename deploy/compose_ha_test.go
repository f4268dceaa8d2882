package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// haServices are the services of the profile "ha".
var haServices = []string{"authority-a", "authority-b", "authorizer-a", "authorizer-b", "etcd-1", "etcd-2", "etcd-3"}

func TestComposeHAProfileServices(t *testing.T) {
	p := loadComposeProfiles(t, "ha")
	for _, name := range haServices {
		svc, ok := p.Services[name]
		if !ok {
			t.Errorf("profile ha has no service %s", name)
			continue
		}
		if !slices.Equal(svc.Profiles, []string{"ha"}) {
			t.Errorf("%s: profiles %v, want [ha]", name, svc.Profiles)
		}
		if svc.Build == nil || svc.Build.Args["SERVICE"] == nil {
			t.Errorf("%s: not built from deploy/Dockerfile with a SERVICE", name)
			continue
		}
		want := strings.TrimRight(name, "-123ab")
		if arg := *svc.Build.Args["SERVICE"]; arg != want {
			t.Errorf("%s: SERVICE = %q, want %q", name, arg, want)
		}
		hc := svc.HealthCheck
		if hc == nil || len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[2] != "healthcheck" {
			t.Errorf("%s: health check %v, want the binary's healthcheck subcommand", name, hc)
		}
	}
	// The etcd image's binary is built from the repository's own main
	// package (etcd's server from the pinned module), not downloaded.
	if _, err := os.Stat(filepath.Join("etcd", "main.go")); err != nil {
		t.Errorf("deploy/etcd/main.go: %v", err)
	}
	// Without the profile, none of these runs.
	def := loadCompose(t)
	for _, name := range haServices {
		if _, ok := def.Services[name]; ok {
			t.Errorf("%s runs without the ha profile", name)
		}
	}
}

func TestComposeHATopology(t *testing.T) {
	p := loadComposeProfiles(t, "ha")
	for _, name := range []string{"etcd-1", "etcd-2", "etcd-3"} {
		cmd := strings.Join(p.Services[name].Command, " ")
		for _, m := range []string{"etcd-1=http://etcd-1:2380", "etcd-2=http://etcd-2:2380", "etcd-3=http://etcd-3:2380"} {
			if !strings.Contains(cmd, m) {
				t.Errorf("%s: --initial-cluster lacks %s: %s", name, m, cmd)
			}
		}
		if !strings.Contains(cmd, "--name="+name+" ") || !strings.Contains(cmd, "--data-dir=/var/lib/sigil/") {
			t.Errorf("%s: name or data directory (in its volume) wrong: %s", name, cmd)
		}
		if len(p.Services[name].Ports) != 0 {
			t.Errorf("%s publishes ports: only the services reach etcd", name)
		}
	}
	for _, name := range []string{"authority-a", "authority-b"} {
		svc := p.Services[name]
		if got := envOf(svc, "STORE"); got != "etcd" {
			t.Errorf("%s: store %q, want etcd", name, got)
		}
		if got := svc.Environment["SIGIL_AUTHORITY_ETCD_ENDPOINTS"]; got == nil || *got != "http://etcd-1:2379,http://etcd-2:2379,http://etcd-3:2379" {
			t.Errorf("%s: etcd endpoints %q, want all three members", name, svc.Environment.ToMapping()["SIGIL_AUTHORITY_ETCD_ENDPOINTS"])
		}
		for _, m := range []string{"etcd-1", "etcd-2", "etcd-3"} {
			if svc.DependsOn[m].Condition != "service_healthy" {
				t.Errorf("%s does not wait for %s to be healthy", name, m)
			}
		}
	}
	for _, name := range []string{"authorizer-a", "authorizer-b"} {
		if got := envOf(p.Services[name], "AUTHORITY"); got != "authority-a:7001,authority-b:7001" {
			t.Errorf("%s follows %q, want both replicas", name, got)
		}
	}
	seen := map[string]string{}
	for name, svc := range p.Services {
		for _, port := range svc.Ports {
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %s on %q, want 127.0.0.1 only", name, port.Published, port.HostIP)
			}
			if other, dup := seen[port.Published]; dup {
				t.Errorf("host port %s published by %s and %s", port.Published, name, other)
			}
			seen[port.Published] = name
		}
	}
}
