//! The node's parts' configuration files, as pure functions of the run:
//! containerd, the CNI bridge, kubelet, CoreDNS and the cluster DNS Service.

use std::path::Path;

use super::*;

impl Node {
    pub(super) fn containerd_config(&self, socket: &Path) -> String {
        let d = |path: &str| self.dir.join(path).display().to_string();
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
# Snapshotters and exporters this node does not use (they only log errors).
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Root lacks CAP_SYS_RESOURCE here: a negative oom_score_adj fails runc's
  # sandbox start ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  # Network namespaces under the state dir, so the teardown finds them.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # No systemd: the cgroupfs driver, as kubelet's cgroupDriver says.
        SystemdCgroup = false
        Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            root = d("containerd/root"),
            state = d("containerd/state"),
            socket = socket.display(),
            opt = d("containerd/opt"),
            pause = images::PAUSE,
            runc = d("runc"),
            cni = d("cni"),
        )
    }

    pub(super) fn cni_config(&self) -> String {
        serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "egress-e2e",
            "plugins": [{
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                // No masquerade: pods reach the host and each other, and
                // nothing else (nothing leaves the machine).
                "ipMasq": false,
                // A pod reaching itself through its Service.
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": HOST_ADDRESS.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.dir.join("cni-ipam").display().to_string(),
                },
            }],
        })
        .to_string()
    }

    pub(super) fn kubelet_config(&self, socket: &Path, healthz: u16) -> String {
        let d = |path: &str| self.dir.join(path).display().to_string();
        serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            // cgroup v1 hosts are refused unless this is false.
            "failCgroupV1": false,
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": true,
            "enforceNodeAllocatable": ["pods"],
            "containerRuntimeEndpoint": format!("unix://{}", socket.display()),
            "failSwapOn": false,
            "address": HOST_ADDRESS.to_string(),
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            // The API server calls the kubelet without a client certificate
            // the kubelet knows; the kubelet serves only on the host side of
            // the pod network.
            "authentication": {"anonymous": {"enabled": true}, "webhook": {"enabled": false}},
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDNS": [DNS_SERVICE_IP.to_string()],
            "clusterDomain": "cluster.local",
            "resolvConf": d("resolv.conf"),
            // A shared development disk may be nearly full: disk pressure
            // would evict the test's pods and image GC delete its images.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "0%",
                "nodefs.inodesFree": "0%",
                "imagefs.available": "0%",
                "imagefs.inodesFree": "0%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "podLogsDir": d("pod-logs"),
            // Tests read decision lines with `kubectl logs`, which returns
            // only a container's current log file: a rotation between a
            // request and the read would hide its line, and a load test
            // writes 150,000 of them (about 100 MB).
            "containerLogMaxSize": "1Gi",
            "volumePluginDir": d("volume-plugins"),
            "serializeImagePulls": false,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
        })
        .to_string()
    }
}

pub(super) fn corefile(kubeconfig: &Path, health: u16, ready: u16) -> String {
    format!(
        r#".:53 {{
    bind {HOST_ADDRESS}
    errors
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    hosts {{
        {HOST_ADDRESS} {HOST_NAME}
        {OUTSIDE_ADDRESS} {OUTSIDE_NAME}
        fallthrough
    }}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} e2e
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
    loadbalance
}}
"#,
        kubeconfig = kubeconfig.display()
    )
}

/// The cluster DNS Service: a fixed ClusterIP and, with no selector, an
/// EndpointSlice that names CoreDNS on the host.
pub(super) fn dns_service() -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-dns"}},
                "spec": {
                    "clusterIP": DNS_SERVICE_IP.to_string(),
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    ],
                },
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": "kube-dns-host", "namespace": "kube-system",
                    "labels": {
                        "kubernetes.io/service-name": "kube-dns",
                        "endpointslice.kubernetes.io/managed-by": "egress-e2e",
                    }},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [HOST_ADDRESS.to_string()],
                    "conditions": {"ready": true}, "nodeName": NODE_NAME}],
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        ],
    })
    .to_string()
}
