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
    counters: HashMap<u64, Counter>,
    total: u64,
    hashes: Vec<u64>,
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
            counters: HashMap::new(),
            total: 0,
            hashes: Vec::new(),
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
        for (row, hash) in self.hashes.iter().enumerate() {
            self.total += 1;
            if let Some(c) = self.counters.get_mut(hash) {
                c.count += 1;
                continue;
            }
            if self.counters.len() < self.capacity {
                self.counters.insert(
                    *hash,
                    Counter {
                        label: label(row),
                        count: 1,
                        error: 0,
                    },
                );
                continue;
            }
            let Some((&evict, min)) = self.counters.iter().min_by_key(|(_, c)| c.count) else {
                continue;
            };
            let floor = min.count;
            self.counters.remove(&evict);
            self.counters.insert(
                *hash,
                Counter {
                    label: label(row),
                    count: floor + 1,
                    error: floor,
                },
            );
        }
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
}
