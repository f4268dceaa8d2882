package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

// TestComposeSidecarProfile checks the "sidecar" profile: an authorizer with
// the route policy, Envoy in front of a product API that is not published.
func TestComposeSidecarProfile(t *testing.T) {
	p := loadComposeProfiles(t, "sidecar")
	got := p.ServiceNames()
	slices.Sort(got)
	want := []string{"authority", "authorizer-1", "authorizer-2", "authorizer-sidecar", "envoy", "product-api"}
	if !slices.Equal(got, want) {
		t.Fatalf("services with profile sidecar = %v, want %v", got, want)
	}
	for _, name := range []string{"authorizer-sidecar", "envoy", "product-api"} {
		if !slices.Equal(p.Services[name].Profiles, []string{"sidecar"}) {
			t.Errorf("%s profiles = %v, want [sidecar]", name, p.Services[name].Profiles)
		}
	}

	az := p.Services["authorizer-sidecar"]
	routes := envOf(az, "ROUTES")
	if routes == "" {
		t.Fatal("authorizer-sidecar: SIGIL_AUTHORIZER_ROUTES not set")
	}
	var mounted bool
	for _, v := range az.Volumes {
		if v.Target == routes && v.ReadOnly && filepath.Base(v.Source) == "routes.yaml" && strings.Contains(v.Source, filepath.Join("deploy", "envoy")) {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("authorizer-sidecar: deploy/envoy/routes.yaml not mounted read-only at %s: %+v", routes, az.Volumes)
	}
	if got := envOf(az, "AUTHORITY"); got != "authority:7001" {
		t.Errorf("authorizer-sidecar follows %q", got)
	}
	if dep, ok := az.DependsOn["authority"]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("authorizer-sidecar does not wait for a healthy authority")
	}

	envoy := p.Services["envoy"]
	if !strings.HasPrefix(envoy.Image, "envoyproxy/envoy:v1.") {
		t.Errorf("envoy image = %q, want envoyproxy/envoy:v1.x", envoy.Image)
	}
	if dep, ok := envoy.DependsOn["authorizer-sidecar"]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("envoy does not wait for a healthy authorizer-sidecar")
	}
	var cfgMounted bool
	for _, v := range envoy.Volumes {
		if v.Target == "/etc/envoy/envoy.yaml" && v.ReadOnly && strings.HasSuffix(v.Source, filepath.Join("deploy", "envoy", "envoy.yaml")) {
			cfgMounted = true
		}
	}
	if !cfgMounted {
		t.Errorf("envoy: deploy/envoy/envoy.yaml not mounted read-only at /etc/envoy/envoy.yaml: %+v", envoy.Volumes)
	}
	if len(envoy.Ports) != 1 || envoy.Ports[0].HostIP != "127.0.0.1" || envoy.Ports[0].Published != "8080" || envoy.Ports[0].Target != 8080 {
		t.Errorf("envoy ports = %+v, want 127.0.0.1:8080:8080", envoy.Ports)
	}
	// Nothing may reach the product without passing Envoy.
	if len(p.Services["product-api"].Ports) != 0 {
		t.Errorf("product-api publishes %+v: it would bypass the PAT check", p.Services["product-api"].Ports)
	}
	// The default profile is unchanged (TestComposeServices).
}

// TestEnvoyConfig checks deploy/envoy/envoy.yaml: it parses as YAML, its
// ext_authz filter asks the authorizer cluster over gRPC and fails closed,
// and that cluster and the product cluster point at the compose services.
func TestEnvoyConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		StaticResources struct {
			Listeners []struct {
				Address struct {
					SocketAddress struct {
						PortValue int `yaml:"port_value"`
					} `yaml:"socket_address"`
				}
				FilterChains []struct {
					Filters []struct {
						Name        string
						TypedConfig struct {
							Type                         string `yaml:"@type"`
							NormalizePath                bool   `yaml:"normalize_path"`
							MergeSlashes                 bool   `yaml:"merge_slashes"`
							PathWithEscapedSlashesAction string `yaml:"path_with_escaped_slashes_action"`
							RouteConfig                  struct {
								VirtualHosts []struct {
									Routes []struct {
										Route struct{ Cluster string }
									}
								} `yaml:"virtual_hosts"`
							} `yaml:"route_config"`
							HTTPFilters []struct {
								Name        string
								TypedConfig map[string]any `yaml:"typed_config"`
							} `yaml:"http_filters"`
						} `yaml:"typed_config"`
					}
				} `yaml:"filter_chains"`
			}
			Clusters []struct {
				Name           string
				LoadAssignment struct {
					Endpoints []struct {
						LBEndpoints []struct {
							Endpoint struct {
								Address struct {
									SocketAddress struct {
										Address   string
										PortValue int `yaml:"port_value"`
									} `yaml:"socket_address"`
								}
							}
						} `yaml:"lb_endpoints"`
					}
				} `yaml:"load_assignment"`
				TypedExtensionProtocolOptions map[string]any `yaml:"typed_extension_protocol_options"`
			}
		} `yaml:"static_resources"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("envoy.yaml: %v", err)
	}
	sr := cfg.StaticResources
	if len(sr.Listeners) != 1 || sr.Listeners[0].Address.SocketAddress.PortValue != 8080 {
		t.Fatalf("want one listener on 8080: %+v", sr.Listeners)
	}
	hcm := sr.Listeners[0].FilterChains[0].Filters[0].TypedConfig
	if !strings.HasSuffix(hcm.Type, "http_connection_manager.v3.HttpConnectionManager") {
		t.Fatalf("first filter is %q", hcm.Type)
	}
	if !hcm.NormalizePath || !hcm.MergeSlashes || hcm.PathWithEscapedSlashesAction != "REJECT_REQUEST" {
		t.Errorf("paths must be normalized, slashes merged and escaped slashes rejected before the check")
	}
	if len(hcm.HTTPFilters) < 2 || hcm.HTTPFilters[0].Name != "envoy.filters.http.ext_authz" || hcm.HTTPFilters[len(hcm.HTTPFilters)-1].Name != "envoy.filters.http.router" {
		t.Fatalf("http filters must be ext_authz first and router last: %+v", hcm.HTTPFilters)
	}
	ext := hcm.HTTPFilters[0].TypedConfig
	if ext["@type"] != "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz" {
		t.Errorf("ext_authz @type = %v", ext["@type"])
	}
	if fma, ok := ext["failure_mode_allow"].(bool); !ok || fma {
		t.Errorf("failure_mode_allow = %v, want false (fail closed)", ext["failure_mode_allow"])
	}
	if ext["transport_api_version"] != "V3" {
		t.Errorf("transport_api_version = %v, want V3", ext["transport_api_version"])
	}
	grpcSvc, _ := ext["grpc_service"].(map[string]any)
	envoyGRPC, _ := grpcSvc["envoy_grpc"].(map[string]any)
	authCluster, _ := envoyGRPC["cluster_name"].(string)
	if authCluster != "sigil_authorizer" {
		t.Fatalf("ext_authz grpc_service cluster = %q, want sigil_authorizer", authCluster)
	}
	routeCluster := hcm.RouteConfig.VirtualHosts[0].Routes[0].Route.Cluster

	compose := loadComposeProfiles(t, "sidecar")
	_, azPort, _ := strings.Cut(envOf(compose.Services["authorizer-sidecar"], "LISTEN"), ":")
	targets := map[string]string{}
	for _, c := range sr.Clusters {
		sa := c.LoadAssignment.Endpoints[0].LBEndpoints[0].Endpoint.Address.SocketAddress
		targets[c.Name] = sa.Address + ":" + strconv.Itoa(sa.PortValue)
		if c.Name == authCluster && c.TypedExtensionProtocolOptions == nil {
			t.Errorf("cluster %s must speak HTTP/2 (gRPC)", c.Name)
		}
	}
	if got, want := targets[authCluster], "authorizer-sidecar:"+azPort; got != want {
		t.Errorf("cluster %s targets %q, want %q", authCluster, got, want)
	}
	if got := targets[routeCluster]; got != "product-api:8000" {
		t.Errorf("route cluster %s targets %q, want product-api:8000", routeCluster, got)
	}
	if !slices.Contains(compose.Services["product-api"].Expose, "8000") {
		t.Errorf("product-api does not expose 8000: %v", compose.Services["product-api"].Expose)
	}
}
