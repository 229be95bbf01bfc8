//! Heavy hitters: the most frequent keys of a keyed operator, in bounded
//! memory (the Space-Saving algorithm of Metwally, Agrawal and El Abbadi).

use std::collections::HashMap;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::hash_utils::{create_hashes, RandomState};

/// Counters for at most `capacity` keys; a new key evicts the smallest
/// counter and inherits its count as error. A key's true count lies in
/// `[count - error, count]`, and any key with more than `total / capacity`
/// occurrences is guaranteed to be kept.
#[derive(Debug)]
pub struct HeavyHitters {
    capacity: usize,
    /// Keyed by row hash; hashed again with a fast hasher (SipHash cost
    /// more than the counting on a hot path).
    counters: HashMap<u64, Counter, RandomState>,
    total: u64,
    /// Scratch space for one batch: row hashes, and each distinct key's
    /// (hash, rows, first row) with its index by hash.
    hashes: Vec<u64>,
    distinct: Vec<(u64, u64, usize)>,
    positions: HashMap<u64, usize, RandomState>,
}

#[derive(Debug, Clone)]
struct Counter {
    label: String,
    count: u64,
    error: u64,
}

/// One of the top keys.
#[derive(Debug, Clone, PartialEq)]
pub struct HotKey {
    pub key: String,
    /// Estimated occurrences (an upper bound).
    pub count: u64,
    /// Occurrences certainly seen (a lower bound).
    pub guaranteed: u64,
    /// Estimated share of all rows seen.
    pub share: f64,
}

impl HeavyHitters {
    pub fn new(capacity: usize) -> Self {
        HeavyHitters {
            capacity: capacity.max(1),
            counters: HashMap::with_hasher(RandomState::default()),
            total: 0,
            hashes: Vec::new(),
            distinct: Vec::new(),
            positions: HashMap::with_hasher(RandomState::default()),
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Counts the rows of `keys` (one column per key part).
    pub fn offer(&mut self, keys: &[ArrayRef]) {
        let Some(rows) = keys.first().map(|k| k.len()) else {
            return;
        };
        self.hashes.clear();
        self.hashes.resize(rows, 0);
        if create_hashes(keys, &RandomState::with_seed(7), &mut self.hashes).is_err() {
            return;
        }
        let formatters: Vec<_> = keys
            .iter()
            .filter_map(|k| {
                ArrayFormatter::try_new(k.as_ref(), &FormatOptions::default().with_null("NULL"))
                    .ok()
            })
            .collect();
        let label = |row: usize| -> String {
            formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Space-Saving takes weights: offering each distinct key of the batch
        // once, in order of first appearance, costs a hash-map update per row
        // instead of an eviction scan and a label per row.
        let mut distinct = std::mem::take(&mut self.distinct);
        distinct.clear();
        self.positions.clear();
        for (row, hash) in self.hashes.iter().enumerate() {
            let next = distinct.len();
            let at = *self.positions.entry(*hash).or_insert(next);
            if at == next {
                distinct.push((*hash, 0, row));
            }
            distinct[at].1 += 1;
        }
        self.total += rows as u64;
        for &(hash, weight, row) in &distinct {
            if let Some(c) = self.counters.get_mut(&hash) {
                c.count += weight;
                continue;
            }
            let floor = if self.counters.len() < self.capacity {
                0
            } else {
                let Some((&evict, min)) = self.counters.iter().min_by_key(|(_, c)| c.count) else {
                    continue;
                };
                let floor = min.count;
                self.counters.remove(&evict);
                floor
            };
            self.counters.insert(
                hash,
                Counter {
                    label: label(row),
                    count: floor + weight,
                    error: floor,
                },
            );
        }
        self.distinct = distinct;
    }

    /// The `n` most frequent keys, most frequent first.
    pub fn top(&self, n: usize) -> Vec<HotKey> {
        let mut all: Vec<&Counter> = self.counters.values().collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
        all.into_iter()
            .take(n)
            .map(|c| HotKey {
                key: c.label.clone(),
                count: c.count,
                guaranteed: c.count - c.error,
                share: if self.total == 0 {
                    0.0
                } else {
                    c.count as f64 / self.total as f64
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use std::sync::Arc;

    #[test]
    fn a_ninety_percent_key_tops_the_list() {
        let mut hh = HeavyHitters::new(8);
        for chunk in 0..100 {
            let keys: Vec<i64> = (0..100)
                .map(|i| {
                    if i % 10 == 0 {
                        1000 + chunk * 100 + i
                    } else {
                        7
                    }
                })
                .collect();
            hh.offer(&[Arc::new(Int64Array::from(keys)) as ArrayRef]);
        }
        let top = hh.top(3);
        assert_eq!(top[0].key, "7");
        assert!((top[0].share - 0.9).abs() < 0.02, "{top:?}");
        assert_eq!(hh.total(), 10_000);
    }

    #[test]
    fn counts_bound_the_truth_and_keep_every_frequent_key() {
        let capacity = 16;
        let mut hh = HeavyHitters::new(capacity);
        let mut truth: HashMap<i64, u64> = HashMap::new();
        let mut x: u64 = 42;
        for _ in 0..50 {
            let keys: Vec<i64> = (0..200)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let r = (x >> 33) % 1000;
                    // A skewed mix: three heavy keys and a long tail.
                    match r {
                        0..=299 => 1,
                        300..=449 => 2,
                        450..=549 => 3,
                        _ => 100 + (r as i64 % 500),
                    }
                })
                .collect();
            for k in &keys {
                *truth.entry(*k).or_default() += 1;
            }
            hh.offer(&[Arc::new(Int64Array::from(keys)) as ArrayRef]);
        }
        let total = hh.total();
        assert_eq!(total, 10_000);
        let top = hh.top(usize::MAX);
        for k in &top {
            let real = truth[&k.key.parse::<i64>().unwrap()];
            assert!(k.guaranteed <= real && real <= k.count, "{k:?} vs {real}");
        }
        for (key, count) in &truth {
            if *count > total / capacity as u64 {
                assert!(
                    top.iter().any(|k| k.key == key.to_string()),
                    "{key} ({count}) lost"
                );
            }
        }
        let names: Vec<&str> = top.iter().take(3).map(|k| k.key.as_str()).collect();
        assert_eq!(names, ["1", "2", "3"]);
    }
}
