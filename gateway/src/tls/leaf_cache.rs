//! Minted leaf certificates by name: bounded (least recently used goes first),
//! minted once per name however many handshakes ask at the same time (single
//! flight), and minted again when they near expiry.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use lru::LruCache;
use rustls::sign::CertifiedKey;
use tokio::sync::OnceCell;

use crate::error::Error;

#[derive(Debug)]
struct Leaf {
    key: Arc<CertifiedKey>,
    renew_at: SystemTime,
}

type Slot = Arc<OnceCell<Leaf>>;

/// The cache.
#[derive(Debug)]
pub struct LeafCache {
    slots: Mutex<LruCache<String, Slot>>,
}

/// Whether a lookup found a leaf or minted one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Found (possibly minted meanwhile by a concurrent lookup).
    Hit,
    /// Minted by this lookup.
    Minted,
}

impl LeafCache {
    /// A cache of at most `capacity` leaves (at least one).
    pub fn new(capacity: usize) -> LeafCache {
        LeafCache {
            slots: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The leaf for `name`, minted with `mint` (on a blocking thread: signing
    /// with an RSA key takes a millisecond) when there is none or it is due.
    pub async fn get_or_mint<F>(
        &self,
        name: &str,
        mint: F,
    ) -> Result<(Arc<CertifiedKey>, Lookup), Error>
    where
        F: FnOnce() -> Result<(CertifiedKey, SystemTime), Error> + Send + 'static,
    {
        let slot = self.slot(name);
        let mut minted = false;
        let leaf = slot
            .get_or_try_init(|| async {
                minted = true;
                let (key, renew_at) = tokio::task::spawn_blocking(mint)
                    .await
                    .map_err(|e| Error::Unusable(format!("certificate minting stopped: {e}")))??;
                Ok::<_, Error>(Leaf {
                    key: Arc::new(key),
                    renew_at,
                })
            })
            .await?;
        let lookup = if minted { Lookup::Minted } else { Lookup::Hit };
        Ok((leaf.key.clone(), lookup))
    }

    /// The slot of `name`: the cached one unless it is due for renewal.
    fn slot(&self, name: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(name) {
            let due = slot
                .get()
                .is_some_and(|leaf| leaf.renew_at <= SystemTime::now());
            if !due {
                return slot.clone();
            }
        }
        let slot = Slot::default();
        slots.put(name.to_owned(), slot.clone());
        slot
    }

    /// Leaves held.
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no leaf is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::tls::authority::{InterceptCa, write_dev_ca};

    fn ca() -> Arc<InterceptCa> {
        let dir = std::env::temp_dir().join(format!("leaf-cache-test-{}", std::process::id()));
        let (files, _) = write_dev_ca(&dir).expect("dev CA");
        Arc::new(InterceptCa::load(&files).expect("loads"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mints_once_per_name_under_concurrency() {
        let cache = Arc::new(LeafCache::new(10));
        let ca = ca();
        let mints = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, ca, mints) = (cache.clone(), ca.clone(), mints.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_mint("www.example.com", move || {
                        mints.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        ca.mint("www.example.com")
                    })
                    .await
                    .expect("mints")
            }));
        }
        let mut minted = 0;
        let mut first: Option<Arc<CertifiedKey>> = None;
        for task in tasks {
            let (key, lookup) = task.await.expect("task");
            minted += usize::from(lookup == Lookup::Minted);
            if let Some(first) = &first {
                assert!(Arc::ptr_eq(first, &key), "every caller gets the same leaf");
            }
            first = Some(key);
        }
        assert_eq!(mints.load(Ordering::SeqCst), 1);
        assert_eq!(minted, 1);
    }

    #[tokio::test]
    async fn bounded_least_recently_used_and_renewed_when_due() {
        let cache = LeafCache::new(2);
        let ca = ca();
        let get = |name: &'static str, renew_at: SystemTime| {
            let ca = ca.clone();
            cache.get_or_mint(name, move || ca.mint(name).map(|(k, _)| (k, renew_at)))
        };
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(get("a.test", later).await.expect("a").1, Lookup::Minted);
        assert_eq!(get("b.test", later).await.expect("b").1, Lookup::Minted);
        assert_eq!(get("a.test", later).await.expect("a").1, Lookup::Hit);
        // c evicts b, the least recently used.
        assert_eq!(get("c.test", later).await.expect("c").1, Lookup::Minted);
        assert_eq!(cache.len(), 2);
        assert_eq!(get("a.test", later).await.expect("a").1, Lookup::Hit);
        assert_eq!(get("b.test", later).await.expect("b").1, Lookup::Minted);
        // A leaf that is due is minted again.
        assert_eq!(
            get("d.test", SystemTime::now()).await.expect("d").1,
            Lookup::Minted
        );
        assert_eq!(get("d.test", later).await.expect("d").1, Lookup::Minted);
        assert_eq!(get("d.test", later).await.expect("d").1, Lookup::Hit);
    }
}
