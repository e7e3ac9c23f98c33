//! Where the gateway's policy, certificates and client identities come from:
//! files ([`file`]) or the API server ([`kube`]), both installing into the
//! same places: the policy store ([`policy_store`]), the TLS material
//! ([`crate::tls`]) and the pod index ([`identity`], kept by [`pods`] from the API); [`health`] says whether
//! the source is reachable.

pub mod file;
pub mod health;
pub mod identity;
pub mod kube;
pub mod pods;
pub mod policy_store;
