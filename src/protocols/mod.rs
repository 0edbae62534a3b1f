//! The protocol handlers that ship with evloop, each a public type an
//! embedder can plug into a reactor of their own.
//!
//! | module | protocol |
//! |---|---|
//! | [`body`] | a span of a file sent region by region in constant memory, shared by both file protocols |
//! | [`chat`] | one chat room over streams and datagrams, lines broadcast once-encoded |
//! | [`echo`] | every byte (stream) or datagram back to its sender |
//! | [`file`](mod@file) | file streaming over plain TCP: a name in, the file's bytes out |
//! | [`http`] | HTTP/1.1 building blocks: request heads, ranges, dates, content types, listings |
//! | [`path`] | confining requested names to a served directory |
//! | [`redis`] | a Redis client: pipelined commands, pub/sub, reconnection with backoff |

pub mod body;
pub mod chat;
pub mod echo;
pub mod file;
pub mod http;
pub mod path;
pub mod redis;
