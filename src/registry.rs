//! The slab of sources: insert, get, remove, each by [`Key`].
//!
//! Always true:
//! - a slot's generation grows by one every time its value is removed, so a
//!   key handed out before the removal never finds the slot's next value;
//! - `get` and `remove` with a stale key find nothing and change nothing;
//! - slots are reused (the slab hands out the most recently freed one first),
//!   which keeps the table dense; the generation is what keeps reuse safe.
//!
//! The same registry holds timers (see `timer.rs`), with the same guarantees
//! for [`crate::TimerId`].

use slab::Slab;

use crate::token::{generation_mask, Key, MAX_INDEX};

/// A slab whose keys carry a generation.
#[derive(Debug)]
pub(crate) struct Registry<T> {
    slots: Slab<Slot<T>>,
    /// The current generation of every slot index ever used. Kept apart from
    /// the slab because the slab forgets a slot's contents when it is freed.
    generations: Vec<u32>,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: T,
}

impl<T> Registry<T> {
    /// An empty registry.
    pub(crate) fn new() -> Self {
        Registry {
            slots: Slab::new(),
            generations: Vec::new(),
        }
    }

    /// The key the next `insert` will return, so a value can be built
    /// knowing its own key. Valid until the registry is next changed.
    pub(crate) fn next_key(&self) -> Key {
        let index = self.slots.vacant_key();
        let generation = self.generations.get(index).copied().unwrap_or(0);
        Key::new(index, generation)
    }

    /// Inserts a value and returns its key, or gives the value back when
    /// every index a token can carry is in use.
    pub(crate) fn insert(&mut self, value: T) -> Result<Key, T> {
        let key = self.next_key();
        if key.index() > MAX_INDEX {
            return Err(value);
        }
        if key.index() == self.generations.len() {
            self.generations.push(0);
        }
        let index = self.slots.insert(Slot {
            generation: key.generation(),
            value,
        });
        debug_assert_eq!(index, key.index());
        Ok(key)
    }

    /// The value named by `key`, if it is still there.
    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        match self.slots.get(key.index()) {
            Some(slot) if slot.generation == key.generation() => Some(&slot.value),
            _ => None,
        }
    }

    /// The value named by `key`, mutably, if it is still there.
    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.slots.get_mut(key.index()) {
            Some(slot) if slot.generation == key.generation() => Some(&mut slot.value),
            _ => None,
        }
    }

    /// Whether `key` still names a value.
    pub(crate) fn contains(&self, key: Key) -> bool {
        self.get(key).is_some()
    }

    /// Removes the value named by `key` and bumps the slot's generation.
    /// A stale key removes nothing.
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        self.get(key)?;
        let slot = self.slots.remove(key.index());
        let generation = &mut self.generations[key.index()];
        *generation = generation.wrapping_add(1) & generation_mask();
        Some(slot.value)
    }

    /// How many values are stored.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every live key with its value.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key, &T)> + '_ {
        self.slots
            .iter()
            .map(|(index, slot)| (Key::new(index, slot.generation), &slot.value))
    }

    /// Every live key, collected so the registry can be changed while
    /// walking them.
    pub(crate) fn keys(&self) -> Vec<Key> {
        self.iter().map(|(key, _)| key).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn stale_key_after_slot_reuse_finds_nothing() {
        let mut registry = Registry::new();
        let old = registry.insert("old").unwrap();
        assert_eq!(registry.remove(old), Some("old"));
        let new = registry.insert("new").unwrap();
        assert_eq!(new.index(), old.index(), "the slot is reused");
        assert_ne!(new, old);
        assert_eq!(registry.get(old), None);
        assert_eq!(registry.remove(old), None);
        assert_eq!(registry.get(new), Some(&"new"));
    }

    #[test]
    fn next_key_predicts_insert() {
        let mut registry = Registry::new();
        let a = registry.insert(1).unwrap();
        registry.remove(a);
        let predicted = registry.next_key();
        assert_eq!(registry.insert(2).unwrap(), predicted);
    }

    /// Model test: random inserts, removes and lookups against a map of ids
    /// that are never reused. Every stale key must miss.
    #[test]
    fn matches_a_map_of_never_reused_ids() {
        let mut registry = Registry::new();
        let mut model: HashMap<u64, (Key, u64)> = HashMap::new();
        let mut dead: Vec<Key> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for id in 0..20_000u64 {
            match next() % 3 {
                0 | 1 if model.len() < 64 => {
                    let value = next();
                    let key = registry.insert(value).unwrap();
                    model.insert(id, (key, value));
                }
                _ => {
                    if let Some(&victim) = model.keys().next() {
                        let (key, value) = model.remove(&victim).unwrap();
                        assert_eq!(registry.remove(key), Some(value));
                        dead.push(key);
                    }
                }
            }
            for (key, value) in model.values() {
                assert_eq!(registry.get(*key), Some(value));
            }
            let probe = dead.len().saturating_sub(8);
            for key in &dead[probe..] {
                assert_eq!(registry.get(*key), None, "stale {key:?} found a value");
            }
            assert_eq!(registry.len(), model.len());
        }
        for key in &dead {
            assert!(!registry.contains(*key));
        }
    }
}
