//! The client-facing side: accepting connections on the two listeners
//! ([`server`]), and for each request what kind it is ([`handler`]): a CONNECT
//! ([`connect`], then a relayed tunnel or an intercepted one, [`intercept`])
//! or an absolute-form request ([`forward`]). What is decided comes from
//! [`crate::pipeline`]; what reaches the destination goes through
//! [`crate::upstream`] and [`crate::relay`].

pub mod connect;
pub mod forward;
pub mod handler;
pub mod intercept;
pub mod server;
