//! Where the gateway's policy, certificates and client identities come from:
//! files ([`file`]) or the API server ([`kube`], and [`pods`] for the pod
//! index), both installing into the same places of the shared state: the
//! policy store ([`crate::gateway::policy_store`]), the TLS material
//! ([`crate::tls`]), the pod index ([`crate::gateway::identity`]) and the
//! credentials' Secrets ([`secrets`] into [`crate::gateway::credentials`]); each
//! says in [`crate::gateway::health`] whether it is reachable.

pub mod file;
pub mod kube;
pub mod pods;
pub mod secrets;
