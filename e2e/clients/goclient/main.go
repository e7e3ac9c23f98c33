// A Go net/http client for the integration tests. It uses the standard proxy
// environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) exactly as a workload in a
// pod would, and trusts the CA bundle in SSL_CERT_FILE.
//
// EGRESS_TEST_RESOLVE=host=addr,... stands in for cluster DNS: connections
// to those names (the proxy's Service, say) go to those addresses.
//
//	goclient URL...   prints "STATUS BODY-BYTES PROTO" per URL, one line each;
//	                  an argument WAIT prints "waiting" and reads a line from
//	                  stdin first (connections stay open meanwhile)
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ForceAttemptHTTP2 = true
	if resolve := os.Getenv("EGRESS_TEST_RESOLVE"); resolve != "" {
		names := map[string]string{}
		for _, pair := range strings.Split(resolve, ",") {
			if name, addr, ok := strings.Cut(pair, "="); ok {
				names[name] = addr
			}
		}
		dialer := &net.Dialer{Timeout: 10 * time.Second}
		transport.DialContext = func(ctx context.Context, network, address string) (net.Conn, error) {
			if host, port, err := net.SplitHostPort(address); err == nil {
				if addr, ok := names[host]; ok {
					address = net.JoinHostPort(addr, port)
				}
			}
			return dialer.DialContext(ctx, network, address)
		}
	}
	client := &http.Client{Transport: transport, Timeout: 20 * time.Second}
	failed := false
	stdin := bufio.NewReader(os.Stdin)
	for _, url := range os.Args[1:] {
		if url == "WAIT" {
			fmt.Println("waiting")
			if _, err := stdin.ReadString('\n'); err != nil {
				fmt.Printf("ERROR stdin: %v\n", err)
				os.Exit(1)
			}
			continue
		}
		resp, err := client.Get(url)
		if err != nil {
			fmt.Printf("ERROR %v\n", err)
			failed = true
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %d %s\n", resp.StatusCode, len(body), resp.Proto)
	}
	if failed {
		os.Exit(1)
	}
}
