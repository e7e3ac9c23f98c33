// A load generator for HTTPS through a forward proxy with a new connection
// per request, as hey -disable-keepalive, but whose TLS client resumes
// sessions (a shared session cache, as a Go or browser client keeps), so the
// proxy's side of resumption is measured. Its summary has hey's shape
// (Requests/sec, "50% in", "99% in", "[200] N responses"), so
// bench/peer-proxies.sh reads it as it reads hey's.
//
//	resume-client -x PROXY_URL -ca BUNDLE -n N -c C [-clients K] [-host NAME] [-no-resume] URL
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	proxy := flag.String("x", "", "proxy URL (http://host:port)")
	bundle := flag.String("ca", "", "CA bundle the destination (or the proxy's minted leaves) chain to")
	n := flag.Int("n", 1000, "requests")
	c := flag.Int("c", 32, "concurrent clients")
	host := flag.String("host", "", "TLS server name and Host, when not the URL's")
	noResume := flag.Bool("no-resume", false, "no session cache: a full handshake every time")
	population := flag.Int("clients", 0, "distinct clients, each with its own session cache, taking requests in turn (default: one per concurrent worker)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: resume-client -x PROXY_URL -ca BUNDLE -n N -c C URL")
		os.Exit(2)
	}
	target := flag.Arg(0)
	pem, err := os.ReadFile(*bundle)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	var proxyURL *url.URL
	if *proxy != "" {
		if proxyURL, err = url.Parse(*proxy); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	// Clients with a session cache each, as separate client processes
	// would have; request k goes to client k mod their number.
	newClient := func() *http.Client {
		config := &tls.Config{RootCAs: roots, ServerName: *host}
		if !*noResume {
			config.ClientSessionCache = tls.NewLRUClientSessionCache(16)
		}
		transport := &http.Transport{TLSClientConfig: config, DisableKeepAlives: true}
		if proxyURL != nil {
			transport.Proxy = http.ProxyURL(proxyURL)
		}
		return &http.Client{Transport: transport, Timeout: 20 * time.Second}
	}

	if *population <= 0 {
		*population = *c
	}
	clients := make([]*http.Client, *population)
	for i := range clients {
		clients[i] = newClient()
	}

	var next, resumed atomic.Int64
	statuses := map[int]int{}
	var latencies []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	started := time.Now()
	for i := 0; i < *c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1)
				if k > int64(*n) {
					return
				}
				client := clients[k%int64(len(clients))]
				begun := time.Now()
				req, _ := http.NewRequest("GET", target, nil)
				if *host != "" {
					req.Host = *host
				}
				status := 0
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
					if resp.TLS != nil && resp.TLS.DidResume {
						resumed.Add(1)
					}
				}
				took := time.Since(begun)
				mu.Lock()
				statuses[status]++
				latencies = append(latencies, took)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(started)
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	at := func(q float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(q*float64(len(latencies)-1))].Seconds()
	}
	fmt.Printf("Summary:\n  Total:\t%.4f secs\n  Requests/sec:\t%.4f\n", elapsed.Seconds(), float64(len(latencies))/elapsed.Seconds())
	fmt.Printf("  Resumed:\t%d of %d\n\nLatency distribution:\n", resumed.Load(), len(latencies))
	fmt.Printf("  50%% in %.4f secs\n  99%% in %.4f secs\n\nStatus code distribution:\n", at(0.5), at(0.99))
	for status, count := range statuses {
		if status != 0 {
			fmt.Printf("  [%d]\t%d responses\n", status, count)
		}
	}
	if failed := statuses[0]; failed > 0 {
		fmt.Printf("\nError distribution:\n  [%d]\trequest failed\n", failed)
	}
}
