//! The protocol handlers that ship with evloop, each a public type an
//! embedder can plug into a reactor of their own.
//!
//! | module | protocol |
//! |---|---|
//! | [`echo`] | every byte (stream) or datagram back to its sender |

pub mod echo;
