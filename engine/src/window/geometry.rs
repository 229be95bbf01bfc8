//! Where windows start and end, and how they are cut into slices.
//!
//! Tumbling, hopping and cumulating windows are unions of equal *slices*
//! (panes): a row is aggregated once into its slice, and a window's result
//! merges the states of its slices, so a 10 s window sliding by 100 ms costs
//! one aggregation per row, not a hundred.

use crate::error::{EngineError, Result};
use crate::message::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Windows of `size` starting every `slide` (tumbling: `slide == size`).
    Hop { size: Millis, slide: Millis },
    /// Windows `[cycle, cycle + k * step)` for `k = 1..=max/step`.
    Cumulate { step: Millis, max: Millis },
}

/// The window assigner of a tumbling, hopping or cumulating window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceWindows {
    shape: Shape,
    slice: Millis,
    offset: Millis,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn positive(what: &str, v: Millis) -> Result<()> {
    if v <= 0 {
        return Err(EngineError::Graph(format!(
            "window {what} must be positive, got {v} ms"
        )));
    }
    Ok(())
}

impl SliceWindows {
    pub fn tumble(size: Millis, offset: Millis) -> Result<Self> {
        positive("size", size)?;
        Ok(SliceWindows {
            shape: Shape::Hop { size, slide: size },
            slice: size,
            offset: offset.rem_euclid(size),
        })
    }

    pub fn hop(size: Millis, slide: Millis, offset: Millis) -> Result<Self> {
        positive("size", size)?;
        positive("slide", slide)?;
        Ok(SliceWindows {
            shape: Shape::Hop { size, slide },
            slice: gcd(size, slide),
            offset: offset.rem_euclid(slide),
        })
    }

    pub fn cumulate(step: Millis, max: Millis, offset: Millis) -> Result<Self> {
        positive("step", step)?;
        positive("max size", max)?;
        if max % step != 0 {
            return Err(EngineError::Graph(format!(
                "CUMULATE max size ({max} ms) must be a multiple of its step ({step} ms)"
            )));
        }
        Ok(SliceWindows {
            shape: Shape::Cumulate { step, max },
            slice: step,
            offset: offset.rem_euclid(max),
        })
    }

    /// The slice length.
    pub fn slice(&self) -> Millis {
        self.slice
    }

    /// End of the slice holding time `t`.
    pub fn slice_end(&self, t: Millis) -> Millis {
        (t - self.offset).div_euclid(self.slice) * self.slice + self.offset + self.slice
    }

    /// The windows containing the slice ending at `slice_end`, as
    /// `(first_end, last_end, step)`.
    pub fn windows_of_slice(&self, slice_end: Millis) -> (Millis, Millis, Millis) {
        let slice_start = slice_end - self.slice;
        match self.shape {
            Shape::Hop { size, slide } => {
                let last_start =
                    (slice_start - self.offset).div_euclid(slide) * slide + self.offset;
                let k = (last_start + size - slice_start - 1).div_euclid(slide);
                (last_start - k * slide + size, last_start + size, slide)
            }
            Shape::Cumulate { step, max } => {
                let cycle = (slice_start - self.offset).div_euclid(max) * max + self.offset;
                (slice_end, cycle + max, step)
            }
        }
    }

    /// The end of the last window containing the slice ending at `slice_end`.
    pub fn last_window_end(&self, slice_end: Millis) -> Millis {
        self.windows_of_slice(slice_end).1
    }

    /// Start of the window ending at `end`.
    pub fn window_start(&self, end: Millis) -> Millis {
        match self.shape {
            Shape::Hop { size, .. } => end - size,
            Shape::Cumulate { max, .. } => {
                (end - 1 - self.offset).div_euclid(max) * max + self.offset
            }
        }
    }

    /// The first window of the slice that is not late at `threshold` (that
    /// is, with `end - 1 > threshold`), if any.
    pub fn first_window_end(&self, slice_end: Millis, threshold: Millis) -> Option<Millis> {
        let (first, last, step) = self.windows_of_slice(slice_end);
        if (last as i128) - 1 <= threshold as i128 {
            return None;
        }
        if (first as i128) - 1 > threshold as i128 {
            return Some(first);
        }
        let k = (threshold as i128 + 1 - first as i128).div_euclid(step as i128) + 1;
        Some((first as i128 + k * step as i128) as Millis)
    }

    /// All window ends of the slice from `first_end` on.
    pub fn window_ends_from(
        &self,
        slice_end: Millis,
        first_end: Millis,
    ) -> impl Iterator<Item = Millis> {
        let (_, last, step) = self.windows_of_slice(slice_end);
        (0..)
            .map_while(move |k: i64| k.checked_mul(step).and_then(|d| first_end.checked_add(d)))
            .take_while(move |e| *e <= last)
    }

    /// For EXPLAIN.
    pub fn describe(&self) -> String {
        match self.shape {
            Shape::Hop { size, slide } if size == slide => format!("TUMBLE(size={})", fmt_ms(size)),
            Shape::Hop { size, slide } => format!(
                "HOP(slide={}, size={}) in slices of {}",
                fmt_ms(slide),
                fmt_ms(size),
                fmt_ms(self.slice)
            ),
            Shape::Cumulate { step, max } => {
                format!("CUMULATE(step={}, max={})", fmt_ms(step), fmt_ms(max))
            }
        }
    }
}

/// `1500` → `1.5s`, `600000` → `10min`.
pub fn fmt_ms(ms: Millis) -> String {
    if ms % 60_000 == 0 {
        format!("{}min", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All windows `[start, end)` containing `t`, by brute force.
    fn brute_force_hop(t: Millis, size: Millis, slide: Millis) -> Vec<Millis> {
        let mut ends = vec![];
        let mut start = (t - size).div_euclid(slide) * slide - slide;
        while start <= t {
            if start <= t && t < start + size {
                ends.push(start + size);
            }
            start += slide;
        }
        ends
    }

    #[test]
    fn tumble_slices_are_windows() {
        let w = SliceWindows::tumble(10, 0).unwrap();
        assert_eq!(w.slice_end(0), 10);
        assert_eq!(w.slice_end(9), 10);
        assert_eq!(w.slice_end(10), 20);
        assert_eq!(w.slice_end(-1), 0);
        assert_eq!(w.windows_of_slice(10), (10, 10, 10));
        assert_eq!(w.window_start(20), 10);
        assert_eq!(w.first_window_end(10, 8), Some(10));
        assert_eq!(w.first_window_end(10, 9), None);
    }

    #[test]
    fn hop_windows_match_brute_force() {
        for (size, slide) in [(10, 5), (10, 3), (6, 4), (10, 10), (10_000, 100)] {
            let w = SliceWindows::hop(size, slide, 0).unwrap();
            for t in -50..50 {
                let se = w.slice_end(t);
                let ends: Vec<_> = w.window_ends_from(se, w.windows_of_slice(se).0).collect();
                assert_eq!(
                    ends,
                    brute_force_hop(t, size, slide),
                    "t={t} size={size} slide={slide}"
                );
                for end in &ends {
                    assert!(w.window_start(*end) <= t && t < *end);
                }
            }
        }
    }

    #[test]
    fn hop_first_window_skips_fired_ones() {
        let w = SliceWindows::hop(10, 5, 0).unwrap();
        // t=7 is in [0,10) and [5,15).
        let se = w.slice_end(7);
        assert_eq!(w.first_window_end(se, 8), Some(10));
        assert_eq!(w.first_window_end(se, 9), Some(15));
        assert_eq!(w.first_window_end(se, 13), Some(15));
        assert_eq!(w.first_window_end(se, 14), None);
        assert_eq!(w.first_window_end(se, i64::MIN), Some(10));
        assert_eq!(w.first_window_end(se, i64::MAX), None);
    }

    #[test]
    fn cumulate_windows_grow_within_a_cycle() {
        let w = SliceWindows::cumulate(2, 6, 0).unwrap();
        assert_eq!(w.slice_end(3), 4);
        assert_eq!(w.windows_of_slice(4), (4, 6, 2));
        assert_eq!(w.window_start(4), 0);
        assert_eq!(w.window_start(6), 0);
        assert_eq!(w.window_start(8), 6);
        let ends: Vec<_> = w.window_ends_from(2, 2).collect();
        assert_eq!(ends, vec![2, 4, 6]);
        assert!(SliceWindows::cumulate(4, 6, 0).is_err());
    }
}
