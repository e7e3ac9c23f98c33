module egress-proxy/e2e/clients/goclient

go 1.22
