module egress-proxy/gateway/tests/clients/goclient

go 1.22
