// CoreDNS for the e2e node, with only the plugins its Corefile uses: the
// full build (core/plugin) pulls in every cloud provider's SDK, which the
// test cluster never uses and which would triple the download and build.
// This is CoreDNS's own main (coredns.go) with a shorter plugin list, the way
// CoreDNS documents builds with external or fewer plugins.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order is the one of CoreDNS's plugin.cfg (zdirectives.go): a plugin
	// sees the effects of the ones after it.
	dnsserver.Directives = []string{
		"bind",
		"ready",
		"health",
		"errors",
		"log",
		"loadbalance",
		"cache",
		"hosts",
		"kubernetes",
	}
}

func main() {
	coremain.Run()
}
