//! Caches kept by background watches, for the webhook (on every replica) and
//! the clients reconciler (on the leader).

use futures_util::{Stream, StreamExt};
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::watcher;

/// A cache of what `events` report, kept by a background task; `changed`
/// sees every object applied or deleted once the first list is in.
pub fn spawn<K, S>(events: S, mut changed: impl FnMut(&K) + Send + 'static) -> Store<K>
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, events);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                    changed(&object);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "watch failed; retrying with backoff"),
            }
        }
    });
    reader
}
