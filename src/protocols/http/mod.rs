//! HTTP/1.1 file serving: [`HttpServer`] and its connections ([`server`]),
//! built from IO-free building blocks: request heads
//! (parsed with `httparse`), byte ranges (RFC 9110 §14), HTTP dates
//! (RFC 9110 §5.6.7), entity tags and conditional requests (RFC 9110 §13),
//! content types, and HTML directory listings.
//!
//! Each is a pure function over bytes or values, tested on its own; names
//! decoded from a request go through [`crate::protocols::path::Root`], the
//! same confinement as the plain file protocol.

pub mod date;
pub mod dir;
pub mod listing;
pub mod mime;
pub mod precondition;
pub mod range;
pub mod request;
pub mod server;

pub use server::{HttpServer, HttpStream, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT};
