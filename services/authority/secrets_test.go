package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestNoSecretsInDatabaseOrLogs runs a session that mints, rotates and
// presents tokens with debug logging, then checks that neither the bbolt
// file nor the captured logs hold any token string or the content of the
// operator, watch or kek files (not even a 20-character piece of one).
func TestNoSecretsInDatabaseOrLogs(t *testing.T) {
	dir := t.TempDir()
	p := startProc(t, dir, "--log-level", "debug")
	var secrets []string
	for i := range 20 {
		r, err := p.client.CreateToken(p.op(), mintReq("acme", fmt.Sprint("t", i), "alice", "organization:tokens", "domain:view"))
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, r.GetToken())
		// Present the token: authentication paths log too.
		if _, err := p.client.GetToken(p.withToken(r.GetToken()), &sigilv1.GetTokenRequest{Self: true}); err != nil {
			t.Fatal(err)
		}
		rot, err := p.client.RotateToken(p.withToken(r.GetToken()), &sigilv1.RotateTokenRequest{Self: true,
			Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: durationpb.New(7 * day)}})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, rot.GetToken())
		// A revoked token presented again fails, and is not logged either.
		if _, err := p.client.GetToken(p.withToken(r.GetToken()), &sigilv1.GetTokenRequest{Self: true}); code(err) == 0 {
			t.Fatal("rotated-away token still works")
		}
	}
	// The healthcheck subcommand probes the running server.
	if out, err := exec.Command(authorityBin(t), "healthcheck", "--addr", p.addr).CombinedOutput(); err != nil || !strings.Contains(string(out), "SERVING") {
		t.Fatalf("healthcheck: %v %s", err, out)
	}
	p.term(t, 30*time.Second)

	forbidden := append([]string{p.secret("operator.token"), p.secret("watch.token"), p.secret("kek")}, secrets...)
	var files []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != "operator.token" && d.Name() != "watch.token" && d.Name() != "kek" {
			files = append(files, path)
		}
		return nil
	})
	haystacks := map[string]string{"logs": p.Logs.String()}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		haystacks[f] = string(b)
	}
	if len(haystacks) < 2 {
		t.Fatal("no database file found")
	}
	for name, h := range haystacks {
		for i, s := range forbidden {
			for _, prefix := range []string{"sigil_pat_", "sigil_op_", "sigil_watch_"} {
				s = strings.TrimPrefix(s, prefix)
			}
			for off := 0; off+20 <= len(s); off += 10 {
				if strings.Contains(h, s[off:off+20]) {
					t.Fatalf("%s holds a piece of secret #%d", name, i)
				}
			}
		}
	}
}
