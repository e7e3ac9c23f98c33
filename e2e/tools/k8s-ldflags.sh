# Sourced by build.sh and node/build.sh: the version ldflags of Kubernetes'
# hack/lib/version.sh, so the binaries report their release (/version, which
# Helm's kubeVersion checks and kubectl's skew warning read; the kubelet's
# version in its Node's status).
#
#   kubernetes_version_ldflags v1.35.0   # prints the -ldflags value for `go build`

kubernetes_version_ldflags() {
	local version=$1 minor flags pkg build_date
	minor=${version#v1.}
	minor=${minor%%.*}
	build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	flags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
	done
	printf '%s\n' "$flags"
}
