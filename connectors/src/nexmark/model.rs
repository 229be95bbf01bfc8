//! The Nexmark model: which event comes at which number, and when, as the
//! `nexmark` crate (RisingWave's port of the Beam/Flink generator) defines
//! it. That crate keeps these derived settings private and builds every
//! event as structs of `String`s; Weir needs the same numbers to write
//! events straight into Arrow builders, so they are ported here, formula
//! for formula (the tests compare with the crate event by event).

use std::f64::consts::PI;
use std::sync::LazyLock;

use nexmark::config::{NexmarkConfig, RateShape};
use rand08::rngs::SmallRng;
use rand08::{Rng, RngCore, SeedableRng};
use strength_reduce::StrengthReducedUsize;

/// The kind of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Person,
    Auction,
    Bid,
}

/// A [`NexmarkConfig`] with the figures derived from it.
#[derive(Debug, Clone)]
pub struct Model {
    pub cfg: NexmarkConfig,
    pub proportion_denominator: usize,
    /// `proportion_denominator` and the out-of-order group size as
    /// divisors that multiply instead of dividing: every event divides by
    /// them several times.
    denominator: StrengthReducedUsize,
    group: StrengthReducedUsize,
    step_length: usize,
    events_per_epoch: usize,
    epoch_period: f32,
    inter_event_delays: Vec<f32>,
}

impl Model {
    pub fn new(cfg: NexmarkConfig) -> Self {
        let proportion_denominator =
            cfg.person_proportion + cfg.auction_proportion + cfg.bid_proportion;
        let generators = cfg.num_event_generators as f32;
        let rate_to_period = |r: usize| cfg.us_per_unit as f32 / r as f32;
        let mut inter_event_delays = Vec::new();
        if cfg.first_rate == cfg.next_rate {
            inter_event_delays.push(rate_to_period(cfg.first_rate) * generators);
        } else {
            match cfg.rate_shape {
                RateShape::Square => {
                    inter_event_delays.push(rate_to_period(cfg.first_rate) * generators);
                    inter_event_delays.push(rate_to_period(cfg.next_rate) * generators);
                }
                RateShape::Sine => {
                    let mid = (cfg.first_rate + cfg.next_rate) as f64 / 2.0;
                    let amp = (cfg.first_rate as f64 - cfg.next_rate as f64) / 2.0;
                    for i in 0..cfg.sine_approx_steps {
                        let r = (2.0 * PI * i as f64) / cfg.sine_approx_steps as f64;
                        let rate = mid + amp * r.cos();
                        inter_event_delays.push(rate_to_period(rate.round() as usize) * generators);
                    }
                }
            }
        }
        let n = if cfg.rate_shape == RateShape::Square {
            2
        } else {
            cfg.sine_approx_steps
        };
        let step_length = cfg.rate_period.div_ceil(n.max(1));
        let mut events_per_epoch = 0;
        let mut epoch_period = 0.0;
        if inter_event_delays.len() > 1 {
            for delay in &inter_event_delays {
                let events = (step_length * 1_000_000) as f32 / delay;
                events_per_epoch += events.round() as usize;
                epoch_period += (events * delay) / 1000.0;
            }
        }
        Model {
            denominator: StrengthReducedUsize::new(proportion_denominator.max(1)),
            group: StrengthReducedUsize::new(cfg.out_of_order_group_size.max(1)),
            cfg,
            proportion_denominator,
            step_length,
            events_per_epoch,
            epoch_period,
            inter_event_delays,
        }
    }

    /// The event number of the generator's `offset`-th event.
    pub fn event_number(&self, offset: u64) -> usize {
        let n = self.cfg.out_of_order_group_size;
        let number = self.cfg.first_event_number + offset as usize;
        (number / self.group) * n + (number * 953) % self.group
    }

    /// When event `number` happens (ms since the epoch).
    pub fn timestamp(&self, number: usize) -> u64 {
        let base = self.cfg.base_time;
        if self.inter_event_delays.len() == 1 {
            return base + ((number as f32 * self.inter_event_delays[0]) / 1000.0).round() as u64;
        }
        let per_epoch = self.events_per_epoch.max(1);
        let epoch = number / per_epoch;
        let mut event_i = number % per_epoch;
        let mut offset_in_epoch = 0.0;
        for delay in &self.inter_event_delays {
            let events = (self.step_length * 1_000_000) as f32 / delay;
            if self.cfg.out_of_order_group_size < events.round() as usize {
                let offset_in_cycle = event_i as f32 * delay;
                return base
                    + (epoch as f32 * self.epoch_period
                        + offset_in_epoch
                        + offset_in_cycle / 1000.0)
                        .round() as u64;
            }
            event_i = event_i.wrapping_sub(events.round() as usize);
            offset_in_epoch += (events * delay) / 1000.0;
        }
        0
    }

    pub fn kind(&self, number: usize) -> Kind {
        let rem = number % self.denominator;
        if rem < self.cfg.person_proportion {
            Kind::Person
        } else if rem < self.cfg.person_proportion + self.cfg.auction_proportion {
            Kind::Auction
        } else {
            Kind::Bid
        }
    }

    /// The last person id (base 0) at event id `event_id`.
    ///
    /// With a proportion of 0 the crate's arithmetic wraps (in a release
    /// build; it panics in a debug one): wrapping here gives its values
    /// and never panics.
    pub fn last_person(&self, event_id: usize) -> usize {
        let (epoch, offset) = StrengthReducedUsize::div_rem(event_id, self.denominator);
        let offset = offset.min(self.cfg.person_proportion.wrapping_sub(1));
        epoch
            .wrapping_mul(self.cfg.person_proportion)
            .wrapping_add(offset)
    }

    /// A random active person id (base 0).
    pub fn next_person(&self, event_id: usize, rng: &mut SmallRng) -> usize {
        let people = self.last_person(event_id).wrapping_add(1);
        let active = people.min(self.cfg.active_people);
        let lead = (active + self.cfg.person_id_lead).max(1);
        people - active + rng.gen_range(0..lead)
    }

    /// The last auction id (base 0) at event id `event_id`.
    pub fn last_auction(&self, event_id: usize) -> usize {
        let (mut epoch, mut offset) = StrengthReducedUsize::div_rem(event_id, self.denominator);
        let (person, auction) = (self.cfg.person_proportion, self.cfg.auction_proportion);
        if offset < person {
            epoch = epoch.wrapping_sub(1);
            offset = auction.wrapping_sub(1);
        } else if person + auction <= offset {
            offset = auction.wrapping_sub(1);
        } else {
            offset -= person;
        }
        epoch.wrapping_mul(auction).wrapping_add(offset)
    }

    /// A random auction id (base 0) in flight.
    pub fn next_auction(&self, event_id: usize, rng: &mut SmallRng) -> usize {
        let max = self.last_auction(event_id);
        let min = max.saturating_sub(self.cfg.in_flight_auctions);
        let span = (max - min)
            .wrapping_add(1 + self.cfg.auction_id_lead)
            .max(1);
        min.wrapping_add(rng.gen_range(0..span))
    }

    /// How long an auction created at event `number` lasts, in ms.
    pub fn auction_length(&self, number: usize, rng: &mut SmallRng, time: u64) -> u64 {
        let events = (self.cfg.in_flight_auctions * self.proportion_denominator)
            / self.cfg.auction_proportion.max(1);
        let horizon = self.timestamp(number + events).wrapping_sub(time);
        1 + rng.gen_range(0..horizon.wrapping_mul(2).max(1))
    }
}

/// What `gen_range(b'a'..=b'z')` accepts from a `u32` in rand 0.8: a draw
/// whose low half of `draw * 26` is above this zone is rejected.
const LETTER_ZONE: u32 = u32::MAX - ((u32::MAX - 26 + 1) % 26);

/// One lower-case letter, drawn exactly as `rng.gen_range(b'a'..=b'z')`
/// draws it (rand 0.8's widening multiply and rejection zone), without
/// going through a distribution object for every letter.
#[inline]
fn letter(rng: &mut SmallRng) -> u8 {
    loop {
        let wide = u64::from(rng.next_u32()) * 26;
        if wide as u32 <= LETTER_ZONE {
            return b'a' + (wide >> 32) as u8;
        }
    }
}

/// Appends `length` random letters.
pub fn letters(rng: &mut SmallRng, length: usize, out: &mut Vec<u8>) {
    out.extend((0..length).map(|_| letter(rng)));
}

/// Appends the `extra` padding that brings an event to its average size.
pub fn extra(rng: &mut SmallRng, current: usize, average: usize, out: &mut Vec<u8>) {
    if current > average {
        return;
    }
    let wanted = average - current;
    let delta = (wanted + 2) / 5;
    let min = wanted - delta;
    let size = min
        + if delta == 0 {
            0
        } else {
            rng.gen_range(0..2 * delta)
        };
    letters(rng, size, out);
}

/// A random price in cents.
pub fn price(rng: &mut SmallRng) -> usize {
    (10.0_f32.powf(rng.gen::<f32>() * 6.0) * 100.0).round() as usize
}

/// The URL of channel `seed`.
pub fn base_url(seed: u64) -> String {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut id = || {
        let len = rng.gen_range(3..5);
        (0..len)
            .map(|_| {
                if rng.gen_range(0..13) == 0 {
                    '_'
                } else {
                    rng.gen_range(b'a'..=b'z') as char
                }
            })
            .collect::<String>()
    };
    let (a, b, c) = (id(), id(), id());
    format!("https://www.nexmark.com/{a}/{b}/{c}/item.htm?query=1")
}

/// The channels and URLs of bids that are not on a hot channel.
pub static CHANNELS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    (0..10_000usize)
        .map(|i| {
            let mut url = base_url(i as u64);
            let mut rng = SmallRng::seed_from_u64(i as u64);
            if rng.gen_range(0..10) > 0 {
                url.push_str("&channel_id=");
                url.push_str(&i64::abs((i as i32).reverse_bits() as i64).to_string());
            }
            (format!("channel-{i}"), url)
        })
        .collect()
});
