//! The injection webhook's HTTPS server: an `AdmissionReview` of a pod in,
//! a JSON patch out (what to patch is [`crate::inject`]'s decision). Every
//! replica serves it, not only the leader: the API server calls whichever
//! the Service picks. Its certificate comes from a Secret and is swapped
//! when the Secret changes, without a restart.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use egress_runtime::serving::ServingCert;
use egress_runtime::slots::Slots;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use rustls::pki_types::PrivateKeyDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::cache;
use crate::cluster_facts::ClusterView;
use crate::crd::EgressProxy;
use crate::inject;
use crate::metrics::{Metrics, WebhookLabels};

/// Largest review accepted (a pod is at most 1.5 MiB in etcd). With
/// [`MAX_CONNECTIONS`] it bounds the memory reviews can take.
const MAX_BODY: usize = 2 * 1024 * 1024;
/// Connections served at once (with [`MAX_BODY`], what reviews can hold in
/// memory).
const MAX_CONNECTIONS: usize = 64;
/// Connections served at once from one address. The API server opens one
/// per review in flight (HTTP/1.1), so its share is most of the total; a
/// pod flooding the port takes no more, and when all are taken the peer
/// holding the most gives up its oldest connection to a newcomer.
const MAX_PER_PEER: usize = 48;
/// Time for a TLS handshake and a request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole request, body included (the API server gives up sooner:
/// the chart's `timeoutSeconds` is 5).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one connection is kept; then it is closed between requests
/// (the API server opens another), so idle connections cannot hold the
/// slots.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Checks and installs a certificate chain and key (PEM) as the webhook's
/// serving certificate; on error the current one stays.
fn install_pem(cert: &ServingCert, cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let chain = egress_pki::certificates(cert_pem).map_err(|e| e.to_string())?;
    let key = egress_pki::private_key_pkcs8(key_pem).map_err(|e| e.to_string())?;
    cert.install(chain, PrivateKeyDer::Pkcs8(key))
        .map_err(|e| format!("the certificate and key cannot be served: {e}"))
}

/// What the webhook decides with.
pub struct Webhook {
    client: Client,
    proxies: Store<EgressProxy>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    cluster: ClusterView,
    metrics: Arc<Metrics>,
    /// The serving certificate.
    pub cert: Arc<ServingCert>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Starts the caches the webhook reads (proxies, namespace labels) and
    /// follows the certificate in Secret `secret` of `namespace`.
    pub fn start(
        client: Client,
        cluster: ClusterView,
        namespace: &str,
        secret: &str,
        metrics: Arc<Metrics>,
    ) -> Arc<Webhook> {
        let proxies = cache::spawn(
            watcher(
                Api::<EgressProxy>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
            |_| {},
        );
        let namespaces = cache::spawn(
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
            |_| {},
        );
        let cert = Arc::new(ServingCert::default());
        tokio::spawn(follow_certificate(
            Api::namespaced(client.clone(), namespace),
            secret.to_owned(),
            cert.clone(),
        ));
        Arc::new(Webhook {
            client,
            proxies,
            namespaces,
            cluster,
            metrics,
            cert,
        })
    }

    /// Completes once the caches are filled and a certificate is installed.
    pub async fn ready(&self) {
        let _ = self.proxies.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        while !self.cert.is_installed() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The metadata of namespace `name`: from the cache, or from the API
    /// server for one created or labelled a moment ago. The API server
    /// calls the webhook only for namespaces labelled for injection (the
    /// configuration's namespaceSelector), so a cached copy without the
    /// label is older than the API server's and is read again.
    async fn namespace(&self, name: &str) -> anyhow::Result<ObjectMeta> {
        if let Some(cached) = self.namespaces.get(&ObjectRef::new(name))
            && inject::injection_enabled(&cached.metadata)
        {
            return Ok(cached.metadata.clone());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        Ok(api.get_metadata(name).await?.metadata)
    }

    /// Every EgressProxy, as the API server has them now.
    async fn listed_proxies(&self) -> anyhow::Result<Vec<Arc<EgressProxy>>> {
        let api: Api<EgressProxy> = Api::all(self.client.clone());
        let listed = api.list(&Default::default()).await?;
        Ok(listed.items.into_iter().map(Arc::new).collect())
    }

    /// The response to one review. An `Err` is answered with a 500, so the
    /// API server applies the configuration's failure policy.
    pub async fn review(
        &self,
        review: AdmissionReview<Pod>,
    ) -> anyhow::Result<AdmissionReview<DynamicObject>> {
        let request: AdmissionRequest<Pod> = match review.try_into() {
            Ok(request) => request,
            Err(error) => return Ok(AdmissionResponse::invalid(error.to_string()).into_review()),
        };
        let response = AdmissionResponse::from(&request);
        let Some(pod) = request.object.as_ref() else {
            return Ok(response.into_review());
        };
        let namespace = request
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_default();
        let pod_name = pod
            .metadata
            .name
            .clone()
            .or_else(|| pod.metadata.generate_name.as_ref().map(|g| format!("{g}*")))
            .unwrap_or_default();
        let namespace_meta = self.namespace(&namespace).await?;
        let proxies = self.proxies.state();
        let cluster = self.cluster.borrow().clone();
        let mut outcome = inject::decide(
            &pod.metadata,
            &namespace,
            &namespace_meta,
            &proxies,
            &cluster,
        );
        let none_cached_serves = || {
            !proxies
                .iter()
                .any(|p| inject::serves_namespace(p, &namespace, &namespace_meta, &cluster))
        };
        if matches!(outcome, Err(inject::Skip::NotSelected(_))) && none_cached_serves() {
            // A namespace that asks for injection and no proxy in the cache
            // that serves it: one created a moment ago (a chart that installs
            // a proxy and its workloads together) may not have reached the
            // cache yet, so the proxies are read from the API server once.
            // (A pod only a serving proxy's podSelector leaves out costs no
            // read.)
            match self.listed_proxies().await {
                Ok(listed) => {
                    outcome = inject::decide(
                        &pod.metadata,
                        &namespace,
                        &namespace_meta,
                        &listed,
                        &cluster,
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot list EgressProxies; deciding from the cache")
                }
            }
        }
        let count = |outcome: &'static str, reason: &'static str| {
            self.metrics
                .webhook
                .get_or_create(&WebhookLabels { outcome, reason })
                .inc();
        };
        match outcome {
            Err(skip) => {
                count("skipped", skip.reason());
                tracing::debug!(%namespace, pod = %pod_name, reason = skip.reason(), "not injected");
                let mut response = response;
                if let inject::Skip::NotSelected(why) = skip {
                    // Shown by kubectl: the namespace asked for injection.
                    response.warnings = Some(vec![format!(
                        "egress-proxy: {why}; the pod's traffic does not go through a proxy"
                    )]);
                }
                Ok(response.into_review())
            }
            Ok(choice) => {
                let mutated = inject::mutate(pod, &choice, &cluster);
                let patch = json_patch::diff(
                    &serde_json::to_value(pod)?,
                    &serde_json::to_value(&mutated)?,
                );
                count("injected", "");
                tracing::info!(
                    %namespace,
                    pod = %pod_name,
                    proxy = %choice.names().qualified(),
                    why = %choice.reason,
                    dry_run = request.dry_run,
                    "injected"
                );
                Ok(response.with_patch(patch)?.into_review())
            }
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::POST || request.uri().path() != "/mutate" {
            return respond(StatusCode::NOT_FOUND, "POST /mutate only\n".into());
        }
        // Refused on its declared length before a byte is read, so a client
        // waiting on `Expect: 100-continue` gets the answer, not a reset.
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_BODY as u64) {
            return too_large();
        }
        let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(error) if error.is::<LengthLimitError>() => return too_large(),
            Err(error) => {
                return respond(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the review: {error}\n"),
                );
            }
        };
        let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
            Ok(review) => review,
            Err(error) => {
                count_error(&self.metrics, "malformed");
                return respond(
                    StatusCode::BAD_REQUEST,
                    format!("not an AdmissionReview of a Pod: {error}\n"),
                );
            }
        };
        match self.review(review).await {
            Ok(answer) => match serde_json::to_vec(&answer) {
                Ok(json) => {
                    let mut response = Response::new(Full::new(Bytes::from(json)));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    response
                }
                Err(error) => respond(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
            },
            Err(error) => {
                count_error(&self.metrics, "internal");
                tracing::warn!(%error, "review failed; the failure policy decides");
                respond(StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}\n"))
            }
        }
    }
}

fn count_error(metrics: &Metrics, reason: &'static str) {
    metrics
        .webhook
        .get_or_create(&WebhookLabels {
            outcome: "error",
            reason,
        })
        .inc();
}

fn too_large() -> Response<Full<Bytes>> {
    respond(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("a review is at most {MAX_BODY} bytes\n"),
    )
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Installs the certificate of Secret `name` whenever it changes; a broken
/// one is logged and the previous one keeps serving.
async fn follow_certificate(api: Api<Secret>, name: String, cert: Arc<ServingCert>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut secrets = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
    while let Some(event) = secrets.next().await {
        let secret = match event {
            Ok(secret) => secret,
            Err(error) => {
                tracing::warn!(%error, secret = %name, "watching the webhook certificate failed; retrying");
                continue;
            }
        };
        let data = secret.data.unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default()
        };
        match install_pem(&cert, &text("tls.crt"), &text("tls.key")) {
            Ok(()) => tracing::info!(secret = %name, "webhook certificate installed"),
            Err(error) => {
                tracing::warn!(secret = %name, %error, "webhook certificate not usable; keeping the current one");
            }
        }
    }
}

/// Serves the webhook on `listener` until the process ends.
pub async fn serve(listener: TcpListener, webhook: Arc<Webhook>) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(webhook.cert.server_config()?);
    let slots = Slots::new(MAX_CONNECTIONS, MAX_PER_PEER);
    loop {
        let (stream, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = slots.take(peer.ip()) else {
            tracing::debug!(%peer, "webhook connection refused: no slot left for it");
            continue;
        };
        let (acceptor, webhook) = (acceptor.clone(), webhook.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = serve_connection(stream, peer, &acceptor, webhook) => {}
                () = slot.evicted() => {}
            }
        });
    }
}

/// One connection: the TLS handshake, then reviews until it ends or has
/// lived [`CONNECTION_LIFETIME`].
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    webhook: Arc<Webhook>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "webhook TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let service = service_fn(move |request| {
        let webhook = webhook.clone();
        async move {
            let response = tokio::time::timeout(REQUEST_TIMEOUT, webhook.handle(request))
                .await
                .unwrap_or_else(|_| {
                    respond(StatusCode::REQUEST_TIMEOUT, "request too slow\n".into())
                });
            Ok::<_, Infallible>(response)
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = tokio::time::sleep(CONNECTION_LIFETIME) => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, connection).await;
        }
    }
}
