//! [`Key`]: a slot index *and* the generation of that slot, packed into one
//! [`mio::Token`].
//!
//! A slab reuses the slot of a removed source for the next source inserted.
//! If a token held only the slot index, an event still queued for a
//! connection closed earlier in the same batch would be delivered to whatever
//! connection took its slot next. The generation makes that impossible: the
//! registry bumps a slot's generation every time the slot is emptied, and a
//! key whose generation differs from the slot's current one finds nothing.
//!
//! Packing: the low half of the token's bits hold the index, the high half
//! the generation (32 + 32 bits on 64-bit targets, 16 + 16 on 32-bit ones).
//! A generation wraps around after `2^32` (or `2^16`) reuses of one slot; a
//! stale key could only be confused with a live one if an event stayed queued
//! across that many reuses, which one batch of events cannot do.

use std::fmt;

use mio::Token;

/// Bits of a token that hold the slot index; the rest hold the generation.
const INDEX_BITS: u32 = usize::BITS / 2;
/// Mask of the index bits.
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;

/// The largest slot index a key can carry. The index just above it is
/// reserved for the reactor's own waker.
pub(crate) const MAX_INDEX: usize = INDEX_MASK - 1;

/// The token of the reactor's waker: an index no slot ever has.
pub(crate) const WAKER_TOKEN: Token = Token(INDEX_MASK);

/// Names one source (a listener, a connection, a datagram socket, a custom
/// source) or one timer, for as long as it lives.
///
/// A key is a slot index plus the slot's generation. Once the thing it names
/// is gone, the key never names anything again: looking it up finds nothing,
/// even after the slot has been reused.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use evloop::{Reactor, StreamHandler, Context};
///
/// struct Quiet;
/// impl StreamHandler for Quiet {
///     fn on_data(&mut self, _cx: &mut Context<'_>, data: &[u8]) -> usize { data.len() }
/// }
///
/// let mut reactor = Reactor::new()?;
/// let key = reactor.listen_tcp("127.0.0.1:0".parse()?, |_: &evloop::Addr| Quiet)?;
/// assert!(reactor.contains(key));
/// reactor.close(key);
/// assert!(!reactor.contains(key));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    /// The slot index and generation, as [`Key`]'s `Display` shows them.
    pub(crate) fn parts(self) -> (u32, u32) {
        (self.index, self.generation)
    }

    /// Makes a key from a slot index and a generation. The generation is
    /// truncated to the bits a token can carry.
    pub(crate) fn new(index: usize, generation: u32) -> Key {
        debug_assert!(index <= MAX_INDEX, "slot index {index} does not fit a token");
        Key {
            index: index as u32,
            generation: generation & generation_mask(),
        }
    }

    /// The slot index.
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The slot's generation when this key was made.
    pub fn generation(self) -> u32 {
        self.generation
    }

    /// Packs the key into a mio token: generation in the high bits, index
    /// in the low bits.
    pub(crate) fn to_token(self) -> Token {
        let generation = (self.generation as usize) << INDEX_BITS;
        Token(generation | self.index as usize)
    }

    /// Unpacks a token made by [`Key::to_token`]. Returns `None` for the
    /// waker's token, which names no slot.
    pub(crate) fn from_token(token: Token) -> Option<Key> {
        if token == WAKER_TOKEN {
            return None;
        }
        let index = token.0 & INDEX_MASK;
        let generation = (token.0 >> INDEX_BITS) as u32;
        Some(Key::new(index, generation))
    }
}

/// The generation bits a token can carry.
pub(crate) const fn generation_mask() -> u32 {
    if INDEX_BITS >= 32 {
        u32::MAX
    } else {
        (1u32 << INDEX_BITS) - 1
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_survives_token_round_trip() {
        for (index, generation) in [(0, 0), (1, 7), (MAX_INDEX, generation_mask()), (42, 1)] {
            let key = Key::new(index, generation);
            assert_eq!(Key::from_token(key.to_token()), Some(key));
        }
    }

    #[test]
    fn waker_token_names_no_key() {
        assert_eq!(Key::from_token(WAKER_TOKEN), None);
    }

    #[test]
    fn keys_differing_only_in_generation_make_different_tokens() {
        assert_ne!(Key::new(3, 1).to_token(), Key::new(3, 2).to_token());
    }
}
