// A Go net/http client for the gateway's integration tests. It uses the
// standard proxy environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) exactly as a
// workload in a pod would, and trusts the CA bundle in SSL_CERT_FILE.
//
//	goclient URL...   prints "STATUS BODY-BYTES PROTO" per URL, one line each;
//	                  an argument WAIT prints "waiting" and reads a line from
//	                  stdin first (connections stay open meanwhile)
package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ForceAttemptHTTP2 = true
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
