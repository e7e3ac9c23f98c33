//! The client-facing side: accepting connections on the two listeners
//! ([`server`]), and for each request what kind it is ([`handler`]) and how
//! it is carried through: a CONNECT ([`connect`], then a relayed tunnel,
//! [`tunnel`], or an intercepted one, [`intercept`]) or an absolute-form
//! request ([`forward`]); an HTTP request, plain or intercepted, is one
//! [`exchange`] with the destination. The admin listener ([`admin`]) serves
//! probes and metrics. What is decided comes from [`crate::pipeline`]; what
//! reaches the destination goes through [`crate::upstream`] and
//! [`crate::relay`].

pub mod admin;
pub mod connect;
pub mod exchange;
pub mod forward;
pub mod handler;
pub mod intercept;
pub mod server;
pub mod tunnel;
