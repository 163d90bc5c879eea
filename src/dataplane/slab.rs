//! The worker's connections, by index and generation: the one place that
//! tells a live slot from a freed or reused one. A completion, a timer or a
//! starved half names a slot by its [`Key`]; a key whose generation no
//! longer matches finds nothing.
#![forbid(unsafe_code)]

use super::token::{GENERATION_BITS, MAX_CONNS};

const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;

/// A slot's index and generation (the generation as a token carries it:
/// its low [`GENERATION_BITS`] bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub index: u32,
    pub generation: u32,
}

#[derive(Debug)]
struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

/// Values by [`Key`]; freed indices are reused with the next generation.
#[derive(Debug)]
pub struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    live: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Store `value` in a free index (or a new one); its key.
    pub fn insert(&mut self, value: T) -> Key {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    value: None,
                });
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        // Indices from MAX_CONNS on name the pool and the worker itself in
        // tokens: four billion slots come first.
        debug_assert!(index < MAX_CONNS, "slab index {index} is reserved");
        let entry = &mut self.entries[index as usize];
        debug_assert!(entry.value.is_none(), "a free index holds a value");
        entry.generation = entry.generation.wrapping_add(1) & GENERATION_MASK;
        entry.value = Some(value);
        self.live += 1;
        Key {
            index,
            generation: entry.generation,
        }
    }

    fn entry(&self, key: Key) -> Option<&Entry<T>> {
        self.entries
            .get(key.index as usize)
            .filter(|e| e.generation == key.generation & GENERATION_MASK)
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        self.entry(key).and_then(|e| e.value.as_ref())
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.entries
            .get_mut(key.index as usize)
            .filter(|e| e.generation == key.generation & GENERATION_MASK)
            .and_then(|e| e.value.as_mut())
    }

    /// Take the value out; its index is free for the next insert.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let entry = self
            .entries
            .get_mut(key.index as usize)
            .filter(|e| e.generation == key.generation & GENERATION_MASK)?;
        let value = entry.value.take()?;
        self.free.push(key.index);
        self.live -= 1;
        Some(value)
    }

    /// Values stored.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The keys of every value stored (collected: the caller mutates the
    /// slab while it walks them).
    pub fn keys(&self) -> Vec<Key> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.value.is_some())
            .map(|(i, e)| Key {
                index: i as u32,
                generation: e.generation,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_index_is_reused_and_the_old_key_finds_nothing() {
        let mut slab = Slab::default();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!((a.index, b.index), (0, 1));
        assert_eq!(slab.live(), 2);
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None, "removed twice");
        let c = slab.insert("c");
        assert_eq!(c.index, a.index, "the free index is reused");
        assert_ne!(c.generation, a.generation);
        assert_eq!(slab.get(a), None, "a stale key finds nothing");
        assert_eq!(slab.get_mut(a), None);
        assert_eq!(slab.get(c), Some(&"c"));
        assert_eq!(slab.keys(), vec![c, b]);
        assert_eq!(slab.live(), 2);
    }

    #[test]
    fn generations_compare_as_tokens_carry_them() {
        let mut slab = Slab::default();
        let k = slab.insert(1u8);
        // A token keeps only the low GENERATION_BITS bits; the high ones
        // never matter.
        let from_token = Key {
            index: k.index,
            generation: k.generation | (1 << GENERATION_BITS),
        };
        assert_eq!(slab.get(from_token), Some(&1));
        // Wrapping past the mask still changes the generation.
        for _ in 0..5 {
            let k = slab.keys()[0];
            slab.remove(k);
            let n = slab.insert(2u8);
            assert!(n.generation <= GENERATION_MASK);
            assert_ne!(n.generation, k.generation);
        }
    }

    #[test]
    fn an_out_of_range_key_finds_nothing() {
        let mut slab: Slab<u8> = Slab::default();
        let k = Key {
            index: 7,
            generation: 1,
        };
        assert_eq!(slab.get(k), None);
        assert_eq!(slab.remove(k), None);
        assert_eq!(slab.live(), 0);
    }
}
