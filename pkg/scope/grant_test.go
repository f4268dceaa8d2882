package scope

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	c := Builtin()
	for _, tc := range []struct {
		name string
		in   []Grant
		want []Grant
	}{
		{
			name: "implication expanded",
			in:   []Grant{{Permissions: []string{"domain:renew"}}},
			want: []Grant{{Permissions: []string{"domain:renew", "domain:view"}}},
		},
		{
			name: "sorted and deduplicated",
			in: []Grant{{
				Permissions: []string{"domain:tech", "billing:view", "domain:view", "domain:renew", "billing:view"},
				Resources:   []string{"domains/b.com", "domains/a.com", "domains/b.com"},
			}},
			want: []Grant{{
				Permissions: []string{"billing:view", "domain:renew", "domain:tech", "domain:view"},
				Resources:   []string{"domains/a.com", "domains/b.com"},
			}},
		},
		{
			name: "grant order kept, resources per grant",
			in: []Grant{
				{Permissions: []string{"organization:manage"}},
				{Permissions: []string{"certificate:manage"}, Resources: []string{"certificates/7f3a"}},
			},
			want: []Grant{
				{Permissions: []string{"organization:manage", "organization:view"}},
				{Permissions: []string{"certificate:manage", "certificate:view"}, Resources: []string{"certificates/7f3a"}},
			},
		},
		{
			name: "empty resources become nil",
			in:   []Grant{{Permissions: []string{"payment:prepaid"}, Resources: []string{}}},
			want: []Grant{{Permissions: []string{"payment:prepaid"}}},
		},
		{
			name: "ancestor and descendant both kept",
			in:   []Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/a.com/records/www", "domains/a.com"}}},
			want: []Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/a.com", "domains/a.com/records/www"}}},
		},
		{
			name: "at the limits",
			in: []Grant{{
				Permissions: slices.Repeat([]string{"domain:view"}, MaxPermissionsPerGrant),
				Resources:   slices.Repeat([]string{"domains/a.com"}, MaxResourcesPerGrant),
			}},
			want: []Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/a.com"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Expand(tc.in)
			if err != nil {
				t.Fatalf("Expand: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Expand = %#v, want %#v", got, tc.want)
			}
			again, err := c.Expand(got)
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("Expand is not idempotent: %#v, %v", again, err)
			}
		})
	}
}

func TestExpandMaxGrants(t *testing.T) {
	in := slices.Repeat([]Grant{{Permissions: []string{"domain:view"}}}, MaxGrants)
	got, err := Builtin().Expand(in)
	if err != nil || len(got) != MaxGrants {
		t.Fatalf("Expand(%d grants) = %d grants, %v", MaxGrants, len(got), err)
	}
}

func TestExpandDoesNotAlias(t *testing.T) {
	in := []Grant{{
		Permissions: []string{"domain:view", "billing:view"},
		Resources:   []string{"domains/b.com", "domains/a.com"},
	}}
	out, err := Builtin().Expand(in)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in[0].Permissions, []string{"domain:view", "billing:view"}) || !slices.Equal(in[0].Resources, []string{"domains/b.com", "domains/a.com"}) {
		t.Errorf("Expand changed its input: %#v", in)
	}
	out[0].Resources[0] = "x"
	out[0].Permissions[0] = "x"
	if in[0].Resources[1] != "domains/a.com" || in[0].Permissions[1] != "billing:view" {
		t.Errorf("output shares memory with input: %#v", in)
	}
}

func TestExpandErrors(t *testing.T) {
	view := []string{"domain:view"}
	for _, tc := range []struct {
		name string
		in   []Grant
		want ValidationError
	}{
		{
			name: "no grants",
			in:   nil,
			want: ValidationError{Field: "grants", Reason: "at least one grant is required"},
		},
		{
			name: "too many grants",
			in:   slices.Repeat([]Grant{{Permissions: view}}, MaxGrants+1),
			want: ValidationError{Field: "grants", Reason: "at most 64 grants, got 65"},
		},
		{
			name: "grant without permissions",
			in:   []Grant{{Permissions: view}, {Resources: []string{"domains/a.com"}}},
			want: ValidationError{Field: "grants[1].permissions", Reason: "at least one permission is required"},
		},
		{
			name: "too many permissions",
			in:   []Grant{{Permissions: slices.Repeat(view, MaxPermissionsPerGrant+1)}},
			want: ValidationError{Field: "grants[0].permissions", Reason: "at most 64 permissions, got 65"},
		},
		{
			name: "too many resources",
			in:   []Grant{{Permissions: view, Resources: slices.Repeat([]string{"domains/a.com"}, MaxResourcesPerGrant+1)}},
			want: ValidationError{Field: "grants[0].resources", Reason: "at most 256 resources, got 257"},
		},
		{
			name: "unknown permission",
			in:   []Grant{{Permissions: view}, {Permissions: []string{"domain:view", "domain:fly"}}},
			want: ValidationError{Field: "grants[1].permissions[1]", Value: "domain:fly", Reason: "unknown permission"},
		},
		{
			name: "malformed permission",
			in:   []Grant{{Permissions: []string{"Domain:view"}}},
			want: ValidationError{Field: "grants[0].permissions[0]", Value: "Domain:view", Reason: reasonProductSyntax},
		},
		{
			name: "empty permission",
			in:   []Grant{{Permissions: []string{""}}},
			want: ValidationError{Field: "grants[0].permissions[0]", Reason: reasonEmpty},
		},
		{
			name: "wildcard permission",
			in:   []Grant{{Permissions: []string{"domain:*"}}},
			want: ValidationError{Field: "grants[0].permissions[0]", Value: "domain:*", Reason: reasonActionSyntax},
		},
		{
			name: "malformed resource",
			in:   []Grant{{Permissions: view, Resources: []string{"domains/a.com", "domains/*"}}},
			want: ValidationError{Field: "grants[0].resources[1]", Value: "domains/*", Reason: reasonID},
		},
		{
			name: "traversal resource",
			in:   []Grant{{Permissions: view, Resources: []string{"domains/a.com/records/.."}}},
			want: ValidationError{Field: "grants[0].resources[0]", Value: "domains/a.com/records/..", Reason: reasonDotID},
		},
		{
			name: "empty resource",
			in:   []Grant{{Permissions: view, Resources: []string{""}}},
			want: ValidationError{Field: "grants[0].resources[0]", Reason: reasonEmpty},
		},
		{
			name: "collection as resource",
			in:   []Grant{{Permissions: view, Resources: []string{"domains"}}},
			want: ValidationError{Field: "grants[0].resources[0]", Value: "domains", Reason: reasonOddSegments},
		},
		{
			name: "first problem reported",
			in:   []Grant{{Permissions: []string{"a:b"}, Resources: []string{"x"}}, {}},
			want: ValidationError{Field: "grants[0].permissions[0]", Value: "a:b", Reason: "unknown permission"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Builtin().Expand(tc.in)
			if out != nil {
				t.Errorf("Expand returned grants %v with error", out)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Expand error = %v, want *ValidationError", err)
			}
			if *ve != tc.want {
				t.Errorf("Expand error = %+v, want %+v", *ve, tc.want)
			}
			msg := err.Error()
			if msg != "scope: "+tc.want.Field+": "+tc.want.Reason {
				t.Errorf("message %q does not name field %q and reason %q", msg, tc.want.Field, tc.want.Reason)
			}
			if tc.want.Value != "" && strings.Contains(msg, tc.want.Value) {
				t.Errorf("message %q repeats the value %q", msg, tc.want.Value)
			}
		})
	}
}
