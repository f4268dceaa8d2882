package deploy_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

// loadCompose loads docker-compose.yml with the compose specification's own
// loader, as `docker compose` would, validating it against the schema.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	return loadComposeProfiles(t)
}

// loadComposeProfiles loads docker-compose.yml with the given profiles enabled.
func loadComposeProfiles(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(nil),
		cli.WithEnvFiles(), // .env names the project, as Compose v1 and v2 read it
		cli.WithDotEnv,
		cli.WithResolvedPaths(true),
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

// TestComposeFileSuitsComposeV1 keeps the file loadable by Debian's
// docker-compose 1.29, whose schema refuses a top-level name (the project
// name is in .env instead).
func TestComposeFileSuitsComposeV1(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := yaml.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	for k := range top {
		if !slices.Contains([]string{"services", "volumes", "secrets", "networks", "configs"}, k) && !strings.HasPrefix(k, "x-") {
			t.Errorf("top-level key %q: docker-compose 1.29 refuses it", k)
		}
	}
}

func TestComposeServices(t *testing.T) {
	p := loadCompose(t)
	if p.Name != "sigil" {
		t.Errorf("project name = %q, want sigil", p.Name)
	}
	want := []string{"authority", "authorizer-1", "authorizer-2"}
	got := p.ServiceNames()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("services = %v, want %v", got, want)
	}
}

func TestComposeBuildsFromDockerfile(t *testing.T) {
	p := loadCompose(t)
	for name, svc := range p.Services {
		t.Run(name, func(t *testing.T) {
			if svc.Build == nil {
				t.Fatal("no build section")
			}
			if filepath.Base(svc.Build.Dockerfile) != "Dockerfile" || !strings.Contains(svc.Build.Dockerfile, "deploy") {
				t.Errorf("dockerfile = %q, want deploy/Dockerfile", svc.Build.Dockerfile)
			}
			arg := svc.Build.Args["SERVICE"]
			if arg == nil {
				t.Fatal("build arg SERVICE missing")
			}
			if _, err := os.Stat(filepath.Join("..", "services", *arg, "main.go")); err != nil {
				t.Errorf("build arg SERVICE=%q names no service: %v", *arg, err)
			}
			wantSvc := "authorizer"
			if name == "authority" {
				wantSvc = "authority"
			}
			if *arg != wantSvc {
				t.Errorf("SERVICE = %q, want %q", *arg, wantSvc)
			}
		})
	}
}

func TestComposeDependenciesWaitForHealth(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"authorizer-1", "authorizer-2"} {
		svc := p.Services[name]
		dep, ok := svc.DependsOn["authority"]
		if !ok {
			t.Errorf("%s does not depend on authority", name)
			continue
		}
		if dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s waits for authority condition %q, want %q", name, dep.Condition, types.ServiceConditionHealthy)
		}
	}
	if len(p.Services["authority"].DependsOn) != 0 {
		t.Errorf("authority must not depend on anything")
	}
}

func TestComposeHealthChecksUseGRPCHealth(t *testing.T) {
	p := loadCompose(t)
	for name, svc := range p.Services {
		t.Run(name, func(t *testing.T) {
			hc := svc.HealthCheck
			if hc == nil || hc.Disable {
				t.Fatal("no health check")
			}
			// Exec form: a scratch image has no shell for CMD-SHELL.
			if len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[1] != "/usr/local/bin/sigil" || hc.Test[2] != "healthcheck" {
				t.Fatalf("health check = %v, want [CMD /usr/local/bin/sigil healthcheck ...]", hc.Test)
			}
			listen := envOf(svc, "LISTEN")
			_, port, ok := strings.Cut(listen, ":")
			if !ok {
				t.Fatalf("listen address %q has no port", listen)
			}
			if !slices.Contains(hc.Test, "--addr=127.0.0.1:"+port) {
				t.Errorf("health check %v does not probe the gRPC port %s", hc.Test, port)
			}
			if hc.Interval == nil || hc.Timeout == nil || hc.Retries == nil {
				t.Errorf("health check needs interval, timeout and retries")
			}
		})
	}
}

func TestComposeAuthorityData(t *testing.T) {
	p := loadCompose(t)
	svc := p.Services["authority"]
	dataDir := envOf(svc, "DATA_DIR")
	if dataDir == "" {
		t.Fatal("SIGIL_AUTHORITY_DATA_DIR not set")
	}
	var mounted bool
	for _, v := range svc.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == "authority-data" && v.Target == dataDir {
			mounted = true
		}
	}
	if !mounted {
		t.Fatalf("named volume authority-data is not mounted at the data dir %s: %+v", dataDir, svc.Volumes)
	}
	if _, ok := p.Volumes["authority-data"]; !ok {
		t.Fatal("volume authority-data not declared")
	}
}

func TestComposeSecretsAreFilesNotValues(t *testing.T) {
	p := loadCompose(t)
	wantSecrets := map[string][]string{
		"authority":    {"kek", "operator_token", "watch_token"},
		"authorizer-1": {"watch_token"},
		"authorizer-2": {"watch_token"},
	}
	for name, svc := range p.Services {
		t.Run(name, func(t *testing.T) {
			var got []string
			for _, s := range svc.Secrets {
				got = append(got, s.Source)
			}
			slices.Sort(got)
			if !slices.Equal(got, wantSecrets[name]) {
				t.Errorf("secrets = %v, want %v", got, wantSecrets[name])
			}
			for k, v := range svc.Environment {
				upper := strings.ToUpper(k)
				if (strings.Contains(upper, "TOKEN") || strings.Contains(upper, "KEK")) && !strings.HasSuffix(upper, "_FILE") {
					t.Errorf("%s carries a secret value in the environment", k)
				}
				if strings.HasSuffix(upper, "_FILE") && (v == nil || !strings.HasPrefix(*v, "/run/secrets/")) {
					t.Errorf("%s = %v, want a path under /run/secrets/", k, v)
				}
			}
		})
	}
	for name, s := range p.Secrets {
		if s.File == "" || !strings.Contains(s.File, filepath.Join("deploy", "secrets")) {
			t.Errorf("secret %s comes from %q, want a file under deploy/secrets", name, s.File)
		}
	}
	gi, err := os.ReadFile("../.gitignore")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(gi), "/deploy/secrets/") {
		t.Error("deploy/secrets/ is not git-ignored")
	}
}

func TestComposePortsLoopbackAndDistinct(t *testing.T) {
	p := loadCompose(t)
	seen := map[string]string{}
	for name, svc := range p.Services {
		if len(svc.Ports) == 0 {
			t.Errorf("%s publishes no port", name)
		}
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
	for _, want := range []string{"7001", "7002", "7003", "9101", "9102", "9103"} {
		if _, ok := seen[want]; !ok {
			t.Errorf("host port %s is not published", want)
		}
	}
}

func TestComposeAuthorizersFollowTheAuthority(t *testing.T) {
	p := loadCompose(t)
	authorityListen := envOf(p.Services["authority"], "LISTEN")
	_, port, _ := strings.Cut(authorityListen, ":")
	for _, name := range []string{"authorizer-1", "authorizer-2"} {
		if got := envOf(p.Services[name], "AUTHORITY"); got != "authority:"+port {
			t.Errorf("%s follows %q, want authority:%s", name, got, port)
		}
	}
}

func TestDockerfileRunsStaticBinaryAsNonRoot(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(froms) == 0 || froms[len(froms)-1][1] != "scratch" {
		t.Fatalf("final stage is not FROM scratch: %v", froms)
	}
	final := df[strings.LastIndex(df, "FROM scratch"):]
	if !strings.Contains(final, "COPY bin/${SERVICE} /usr/local/bin/sigil") {
		t.Error("final stage does not copy the task build binary")
	}
	user := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindStringSubmatch(final)
	if user == nil || strings.HasPrefix(user[1], "0") || strings.HasPrefix(user[1], "root") {
		t.Errorf("final stage user = %v, want a non-root user", user)
	}
	if !strings.Contains(final, `ENTRYPOINT ["/usr/local/bin/sigil"]`) {
		t.Error("entrypoint is not the binary in exec form")
	}
}

// envOf returns the service's SIGIL_<SERVICE>_<suffix> variable.
func envOf(svc types.ServiceConfig, suffix string) string {
	for k, v := range svc.Environment {
		if strings.HasPrefix(k, "SIGIL_") && strings.HasSuffix(k, "_"+suffix) && strings.Count(k, "_") == 2+strings.Count(suffix, "_") && v != nil {
			return *v
		}
	}
	return ""
}
