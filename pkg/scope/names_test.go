package scope

import (
	"errors"
	"strings"
	"testing"
)

// permissionCases seed FuzzValidatePermission too.
var permissionCases = []struct {
	name, in, reason string // reason "" means valid
}{
	{"builtin", "domain:view", ""},
	{"digits dash underscore", "dns2:edit_all-zones", ""},
	{"one letter parts", "a:b", ""},
	{"32 byte parts", strings.Repeat("p", 32) + ":" + strings.Repeat("a", 32), ""},
	{"empty", "", reasonEmpty},
	{"no colon", "domainview", reasonPermissionForm},
	{"two colons", "domain:view:all", reasonPermissionForm},
	{"empty product", ":view", reasonProductSyntax},
	{"empty action", "domain:", reasonActionSyntax},
	{"upper case product", "Domain:view", reasonProductSyntax},
	{"upper case action", "domain:View", reasonActionSyntax},
	{"product starts with digit", "1domain:view", reasonProductSyntax},
	{"action starts with dash", "domain:-view", reasonActionSyntax},
	{"product too long", strings.Repeat("p", 33) + ":view", reasonProductSyntax},
	{"action too long", "domain:" + strings.Repeat("a", 33), reasonActionSyntax},
	{"wildcard action", "domain:*", reasonActionSyntax},
	{"space", "domain: view", reasonActionSyntax},
	{"dot", "domain.view:x", reasonProductSyntax},
	{"non ascii", "domäin:view", reasonProductSyntax},
	{"nul", "domain:vi\x00ew", reasonActionSyntax},
}

func TestValidatePermission(t *testing.T) {
	for _, tc := range permissionCases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidatePermission(tc.in)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("ValidatePermission(%q) = %v, want nil", tc.in, err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("ValidatePermission(%q) = %v, want *ValidationError", tc.in, err)
			}
			want := ValidationError{Field: "permission", Value: tc.in, Reason: tc.reason}
			if *ve != want {
				t.Errorf("ValidatePermission(%q) = %+v, want %+v", tc.in, *ve, want)
			}
		})
	}
}

// resourceCases seed FuzzValidateResource too.
var resourceCases = []struct {
	name, in, reason string // reason "" means valid
}{
	{"domain", "domains/example.com", ""},
	{"nested record", "domains/example.com/records/www", ""},
	{"certificate hex id", "certificates/7f3a9c0e5b", ""},
	{"every id byte", "things/AZaz09._~:@+-", ""},
	{"collection with digits dash underscore", "cloud_v2-servers/x", ""},
	{"id of dots", "files/...", ""},
	{"id starting with dot", "files/.hidden", ""},
	{"three levels", "a/1/b/2/c/3", ""},
	{"at length limit", "d/" + strings.Repeat("x", MaxResourceLen-2), ""},
	{"empty", "", reasonEmpty},
	{"over length limit", "d/" + strings.Repeat("x", MaxResourceLen-1), reasonResourceTooLong},
	{"collection only", "domains", reasonOddSegments},
	{"odd segments", "domains/example.com/records", reasonOddSegments},
	{"leading slash", "/domains/example.com", reasonEmptySegment},
	{"trailing slash", "domains/example.com/", reasonEmptySegment},
	{"double slash", "domains//example.com", reasonEmptySegment},
	{"only slash", "/", reasonEmptySegment},
	{"dot id", "domains/.", reasonDotID},
	{"dot dot id", "domains/..", reasonDotID},
	{"dot dot traversal", "domains/example.com/../x", reasonCollection},
	{"dot dot nested id", "domains/example.com/records/..", reasonDotID},
	{"wildcard id", "domains/*", reasonID},
	{"wildcard collection", "*/example.com", reasonCollection},
	{"glob suffix", "domains/example.*", reasonID},
	{"percent encoding", "domains/example%2Ecom", reasonID},
	{"encoded slash", "domains/a%2Fb", reasonID},
	{"space in id", "domains/example com", reasonID},
	{"tab in id", "domains/example\tcom", reasonID},
	{"newline in id", "domains/example.com\n", reasonID},
	{"nul in id", "domains/a\x00", reasonID},
	{"backslash", `domains/a\b`, reasonID},
	{"question mark", "domains/a?b=c", reasonID},
	{"hash", "domains/a#b", reasonID},
	{"non ascii id", "domains/exämple.com", reasonID},
	{"upper case collection", "Domains/example.com", reasonCollection},
	{"collection starts with digit", "1domains/x", reasonCollection},
	{"collection starts with dash", "-domains/x", reasonCollection},
	{"collection with dot", "do.mains/x", reasonCollection},
	{"collection with colon", "domains:x/y", reasonCollection},
}

func TestValidateResource(t *testing.T) {
	for _, tc := range resourceCases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateResource(tc.in)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("ValidateResource(%q) = %v, want nil", tc.in, err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("ValidateResource(%q) = %v, want *ValidationError", tc.in, err)
			}
			want := ValidationError{Field: "resource", Value: tc.in, Reason: tc.reason}
			if *ve != want {
				t.Errorf("ValidateResource(%q) = %+v, want %+v", tc.in, *ve, want)
			}
		})
	}
}

func TestValidationErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  ValidationError
		want string
	}{
		{
			name: "the value is never repeated",
			err:  ValidationError{Field: "grants[1].permissions[0]", Value: "domain:fly", Reason: "unknown permission"},
			want: `scope: grants[1].permissions[0]: unknown permission`,
		},
		{
			name: "no value",
			err:  ValidationError{Field: "grants", Reason: "at least one grant is required"},
			want: "scope: grants: at least one grant is required",
		},
		{
			name: "a pasted token is not repeated",
			err:  ValidationError{Field: "resource", Value: "sigil_pat_AQoQabcdefgh", Reason: "r"},
			want: `scope: resource: r`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
			if got, want := tc.err.Description(), strings.TrimPrefix(tc.want, "scope: "); got != want {
				t.Errorf("Description() = %q, want %q", got, want)
			}
		})
	}
}

func TestResultString(t *testing.T) {
	for r, want := range map[Result]string{
		Allowed:              "allowed",
		PermissionNotGranted: "permission not granted",
		ResourceNotGranted:   "resource not granted",
		Result(42):           "unknown result",
	} {
		if got := r.String(); got != want {
			t.Errorf("Result(%d).String() = %q, want %q", int(r), got, want)
		}
	}
}
