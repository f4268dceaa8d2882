package scope

import (
	"strconv"
	"testing"
)

func BenchmarkMatch(b *testing.B) {
	for _, bc := range []struct {
		name, permission, resource string
		want                       Result
	}{
		{"hit/unrestricted", "organization:view", "", Allowed},
		{"hit/exact", "domain:renew", "domains/example.org", Allowed},
		{"hit/child", "certificate:manage", "certificates/7f3a9c/files/pem", Allowed},
		{"miss/resource", "domain:renew", "domains/example.net/records/www", ResourceNotGranted},
		{"miss/permission", "cloud:manage", "servers/42", PermissionNotGranted},
		{"miss/traversal", "domain:tech", "domains/example.com/../other.net", ResourceNotGranted},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if Match(token, bc.permission, bc.resource) != bc.want {
					b.Fatal("wrong result")
				}
			}
		})
	}
}

func BenchmarkSubset(b *testing.B) {
	child := []Grant{
		{Permissions: []string{"domain:view"}},
		{Permissions: []string{"domain:renew", "domain:view"}, Resources: []string{"domains/example.com"}},
	}
	large := make([]Grant, 8)
	parentLarge := []Grant{{Permissions: []string{"domain:renew", "domain:view"}}}
	for i := range large {
		large[i] = Grant{Permissions: []string{"domain:renew", "domain:view"}}
		for j := range 64 {
			large[i].Resources = append(large[i].Resources, "domains/d"+strconv.Itoa(i*64+j)+".example/records/www")
		}
		parentLarge[0].Resources = append(parentLarge[0].Resources, large[i].Resources...)
	}
	for _, bc := range []struct {
		name          string
		child, parent []Grant
	}{
		{"token", child, token},
		{"large", large, parentLarge},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !Subset(bc.child, bc.parent) {
					b.Fatal("Subset = false")
				}
			}
		})
	}
}

func BenchmarkExpand(b *testing.B) {
	c := Builtin()
	in := []Grant{
		{Permissions: []string{"organization:view", "billing:view", "domain:view"}},
		{Permissions: []string{"domain:renew", "domain:tech"}, Resources: []string{"domains/example.org", "domains/example.com"}},
		{Permissions: []string{"certificate:manage"}, Resources: []string{"certificates/7f3a9c"}},
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Expand(in); err != nil {
			b.Fatal(err)
		}
	}
}
