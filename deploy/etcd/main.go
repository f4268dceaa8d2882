// Command etcd is the etcd server of the compose profile "ha" and of the
// high-availability tests: etcd's own entry point, built from the
// go.etcd.io/etcd/server/v3 module go.mod already pins (so a fresh clone
// builds it offline once the module cache is filled, with no image pulled),
// plus a `healthcheck` subcommand for images FROM scratch, which have no
// shell or curl:
//
//	etcd healthcheck [--endpoint=http://127.0.0.1:2379]
//
// exits 0 when the member's /health reports a leader and a committed
// read (what `etcdctl endpoint health` checks), 1 otherwise.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		if err := healthcheck(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "etcd healthcheck:", err)
			os.Exit(1)
		}
		return
	}
	etcdmain.Main(os.Args)
}

// healthcheck asks the member's /health endpoint whether it is healthy.
func healthcheck(args []string) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "http://127.0.0.1:2379", "client URL of the member (plain http)")
	timeout := fs.Duration("timeout", 3*time.Second, "bound of the check")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *endpoint+"/health", nil)
	if err != nil {
		return fmt.Errorf("--endpoint: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body); err != nil {
		return fmt.Errorf("%s/health: %w", *endpoint, err)
	}
	if resp.StatusCode != http.StatusOK || body.Health != "true" {
		return fmt.Errorf("%s/health: status %d, health %q, reason %q", *endpoint, resp.StatusCode, body.Health, body.Reason)
	}
	return nil
}
