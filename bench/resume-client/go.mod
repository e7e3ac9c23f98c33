module egress-proxy/bench/resume-client

go 1.22
