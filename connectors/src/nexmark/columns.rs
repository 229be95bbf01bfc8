//! Nexmark events written straight into Arrow builders: per event one
//! seeded RNG, its values appended to the columns of its kind, no
//! per-event structs or strings.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Builder, Int64Builder, StringBuilder, StructArray,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Fields, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use rand08::rngs::SmallRng;
use rand08::seq::SliceRandom;
use rand08::{Rng, SeedableRng};
use weir_engine::{EngineError, Result};

use super::default_schema;
use super::model::{extra, letters, price, Kind, Model, CHANNELS};

/// Which of the generated columns the declared schema uses.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// Whether each row column is read at all: events of a kind nobody
    /// reads are not generated, only counted (each event has its own RNG,
    /// so this changes no other event).
    pub person: bool,
    pub auction: bool,
    pub bid: bool,
    /// The `extra` padding of each kind: the last values drawn from an
    /// event's RNG, so they can be left out without changing the others.
    pub person_extra: bool,
    pub auction_extra: bool,
    pub bid_extra: bool,
}

impl Wanted {
    pub fn of(schema: &SchemaRef) -> Self {
        let has_extra = |column: &str| match schema.field_with_name(column).map(|f| f.data_type()) {
            Ok(DataType::Struct(fields)) => fields.iter().any(|f| f.name() == "extra"),
            _ => false,
        };
        let has = |column: &str| schema.field_with_name(column).is_ok();
        Wanted {
            person: has("person"),
            auction: has("auction"),
            bid: has("bid"),
            person_extra: has_extra("person"),
            auction_extra: has_extra("auction"),
            bid_extra: has_extra("bid"),
        }
    }
}

/// Generates events `offset, offset + step, ...` of a model.
pub struct ColumnarGenerator {
    model: Arc<Model>,
    offset: u64,
    step: u64,
    wanted: Wanted,
    /// Reused for each generated string.
    scratch: String,
    /// The hot channels' URLs.
    hot_urls: Arc<Vec<String>>,
}

impl ColumnarGenerator {
    pub fn new(model: Arc<Model>, offset: u64, step: u64, wanted: Wanted) -> Self {
        let hot_urls = Arc::new(model.cfg.hot_urls.clone());
        ColumnarGenerator {
            model,
            offset,
            step: step.max(1),
            wanted,
            scratch: String::new(),
            hot_urls,
        }
    }

    /// The next `n` events as a batch of `schema` (Flink's Nexmark table or
    /// any subset of its columns and fields, in any order and castable
    /// types).
    pub fn next_batch(&mut self, n: usize, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut columns = Columns::new(n);
        for _ in 0..n {
            let number = self.model.event_number(self.offset);
            self.offset += self.step;
            self.event(number, &mut columns);
        }
        columns.finish(schema)
    }

    fn event(&mut self, number: usize, out: &mut Columns) {
        let model = Arc::clone(&self.model);
        let cfg = &model.cfg;
        let id = cfg.first_event_id + number;
        let time = model.timestamp(number);
        let kind = model.kind(number);
        out.event_type.append_value(match kind {
            Kind::Person => 0,
            Kind::Auction => 1,
            Kind::Bid => 2,
        });
        out.date_time.append_value(time as i64);
        out.kinds.push(kind);
        let wanted = match kind {
            Kind::Person => self.wanted.person,
            Kind::Auction => self.wanted.auction,
            Kind::Bid => self.wanted.bid,
        };
        if !wanted {
            out.person.append_null();
            out.auction.append_null();
            out.bid.append_null();
            return;
        }
        let rng = &mut SmallRng::seed_from_u64(id as u64);
        let s = &mut self.scratch;
        match kind {
            Kind::Person => {
                let p = &mut out.person;
                p.id.append_value((model.last_person(id) + cfg.first_person_id) as i64);
                s.clear();
                s.push_str(pick(&cfg.first_names, rng));
                s.push(' ');
                s.push_str(pick(&cfg.last_names, rng));
                p.name.append_value(s.as_str());
                let mut size = s.len();
                s.clear();
                letters(rng, 7, s);
                s.push('@');
                letters(rng, 5, s);
                s.push_str(".com");
                p.email.append_value(s.as_str());
                size += s.len();
                s.clear();
                for i in 0..4 {
                    if i > 0 {
                        s.push(' ');
                    }
                    let group: i32 = rng.gen_range(0..10000);
                    push_padded(s, group);
                }
                p.credit_card.append_value(s.as_str());
                size += s.len();
                let city = pick(&cfg.us_cities, rng);
                let state = pick(&cfg.us_states, rng);
                p.city.append_value(city);
                p.state.append_value(state);
                p.date_time.append_value(time as i64);
                size += 8 + city.len() + state.len();
                append_extra(
                    &mut p.extra,
                    self.wanted.person_extra,
                    rng,
                    s,
                    size,
                    cfg.avg_person_byte_size,
                );
                out.auction.append_null();
                out.bid.append_null();
            }
            Kind::Auction => {
                let a = &mut out.auction;
                a.id.append_value((model.last_auction(id) + cfg.first_auction_id) as i64);
                s.clear();
                letters(rng, 20, s);
                a.item_name.append_value(s.as_str());
                s.clear();
                letters(rng, 100, s);
                a.description.append_value(s.as_str());
                let initial_bid = price(rng);
                let reserve = initial_bid + price(rng);
                let expires = time + model.auction_length(number, rng, time);
                // P(a hot seller) = 1 - 1/hot_seller_ratio.
                let seller = if rng.gen_range(0..cfg.hot_seller_ratio) > 0 {
                    (model.last_person(id) / HOT_RATIO) * HOT_RATIO
                } else {
                    model.next_person(id, rng)
                };
                let category = cfg.first_category_id + rng.gen_range(0..cfg.num_categories);
                a.initial_bid.append_value(initial_bid as i64);
                a.reserve.append_value(reserve as i64);
                a.date_time.append_value(time as i64);
                a.expires.append_value(expires as i64);
                a.seller.append_value((seller + cfg.first_person_id) as i64);
                a.category.append_value(category as i64);
                let size = 8 + 20 + 100 + 8 + 8 + 8 + 8 + 8;
                append_extra(
                    &mut a.extra,
                    self.wanted.auction_extra,
                    rng,
                    s,
                    size,
                    cfg.avg_auction_byte_size,
                );
                out.person.append_null();
                out.bid.append_null();
            }
            Kind::Bid => {
                let b = &mut out.bid;
                // P(a hot auction) = 1 - 1/hot_auction_ratio.
                let auction = if 0 < rng.gen_range(0..cfg.hot_auction_ratio) {
                    (model.last_auction(id) / HOT_RATIO) * HOT_RATIO
                } else {
                    model.next_auction(id, rng)
                };
                // P(a hot bidder) = 1 - 1/hot_bidder_ratio; hot bidders are
                // the second person of a batch, so they are not hot sellers.
                let bidder = if 0 < rng.gen_range(0..cfg.hot_bidder_ratio) {
                    (model.last_person(id) / HOT_RATIO) * HOT_RATIO + 1
                } else {
                    model.next_person(id, rng)
                };
                let price = price(rng);
                let (channel, url) = if rng.gen_range(0..cfg.hot_channel_ratio) > 0 {
                    let index = rng.gen_range(0..cfg.hot_channels.len());
                    (
                        cfg.hot_channels[index].as_str(),
                        self.hot_urls[index].as_str(),
                    )
                } else {
                    let (c, u) = CHANNELS
                        .choose(rng)
                        .map_or(("", ""), |(c, u)| (c.as_str(), u.as_str()));
                    (c, u)
                };
                b.auction
                    .append_value((auction + cfg.first_auction_id) as i64);
                b.bidder.append_value((bidder + cfg.first_person_id) as i64);
                b.price.append_value(price as i64);
                b.channel.append_value(channel);
                b.url.append_value(url);
                b.date_time.append_value(time as i64);
                append_extra(
                    &mut b.extra,
                    self.wanted.bid_extra,
                    rng,
                    s,
                    32,
                    cfg.avg_bid_byte_size,
                );
                out.person.append_null();
                out.auction.append_null();
            }
        }
    }
}

/// Hot sellers, auctions and bidders are 1 in this many.
const HOT_RATIO: usize = 100;

fn pick<'a>(values: &'a [String], rng: &mut SmallRng) -> &'a str {
    values.choose(rng).map_or("", String::as_str)
}

/// `{:04}` of a value in 0..10000.
fn push_padded(s: &mut String, value: i32) {
    let digits = value.to_string();
    for _ in digits.len()..4 {
        s.push('0');
    }
    s.push_str(&digits);
}

fn append_extra(
    builder: &mut StringBuilder,
    wanted: bool,
    rng: &mut SmallRng,
    scratch: &mut String,
    current: usize,
    average: usize,
) {
    if !wanted {
        builder.append_null();
        return;
    }
    scratch.clear();
    extra(rng, current, average, scratch);
    builder.append_value(scratch.as_str());
}

struct PersonColumns {
    id: Int64Builder,
    name: StringBuilder,
    email: StringBuilder,
    credit_card: StringBuilder,
    city: StringBuilder,
    state: StringBuilder,
    date_time: TimestampMillisecondBuilder,
    extra: StringBuilder,
}

struct AuctionColumns {
    id: Int64Builder,
    item_name: StringBuilder,
    description: StringBuilder,
    initial_bid: Int64Builder,
    reserve: Int64Builder,
    date_time: TimestampMillisecondBuilder,
    expires: TimestampMillisecondBuilder,
    seller: Int64Builder,
    category: Int64Builder,
    extra: StringBuilder,
}

struct BidColumns {
    auction: Int64Builder,
    bidder: Int64Builder,
    price: Int64Builder,
    channel: StringBuilder,
    url: StringBuilder,
    date_time: TimestampMillisecondBuilder,
    extra: StringBuilder,
}

// Events of another kind leave a row column null, with null fields.
impl PersonColumns {
    fn append_null(&mut self) {
        self.id.append_null();
        for text in [
            &mut self.name,
            &mut self.email,
            &mut self.credit_card,
            &mut self.city,
            &mut self.state,
        ] {
            text.append_null();
        }
        self.date_time.append_null();
        self.extra.append_null();
    }
}

impl AuctionColumns {
    fn append_null(&mut self) {
        for int in [
            &mut self.id,
            &mut self.initial_bid,
            &mut self.reserve,
            &mut self.seller,
            &mut self.category,
        ] {
            int.append_null();
        }
        for text in [&mut self.item_name, &mut self.description, &mut self.extra] {
            text.append_null();
        }
        self.date_time.append_null();
        self.expires.append_null();
    }
}

impl BidColumns {
    fn append_null(&mut self) {
        for int in [&mut self.auction, &mut self.bidder, &mut self.price] {
            int.append_null();
        }
        for text in [&mut self.channel, &mut self.url, &mut self.extra] {
            text.append_null();
        }
        self.date_time.append_null();
    }
}

fn strings(n: usize, bytes: usize) -> StringBuilder {
    StringBuilder::with_capacity(n, n * bytes)
}

fn ints(n: usize) -> Int64Builder {
    Int64Builder::with_capacity(n)
}

fn times(n: usize) -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::with_capacity(n)
}

/// The generated columns of one batch.
struct Columns {
    event_type: Int32Builder,
    date_time: TimestampMillisecondBuilder,
    kinds: Vec<Kind>,
    person: PersonColumns,
    auction: AuctionColumns,
    bid: BidColumns,
}

impl Columns {
    fn new(n: usize) -> Self {
        // Bids are most events; people and auctions a few.
        let few = n / 8 + 1;
        Columns {
            event_type: Int32Builder::with_capacity(n),
            date_time: times(n),
            kinds: Vec::with_capacity(n),
            person: PersonColumns {
                id: ints(n),
                name: strings(n, 0),
                email: strings(n, 0),
                credit_card: strings(n, 0),
                city: strings(n, 0),
                state: strings(n, 0),
                date_time: times(n),
                extra: strings(few, 150),
            },
            auction: AuctionColumns {
                id: ints(n),
                item_name: strings(few, 20),
                description: strings(few, 100),
                initial_bid: ints(n),
                reserve: ints(n),
                date_time: times(n),
                expires: times(n),
                seller: ints(n),
                category: ints(n),
                extra: strings(few, 330),
            },
            bid: BidColumns {
                auction: ints(n),
                bidder: ints(n),
                price: ints(n),
                channel: strings(n, 12),
                url: strings(n, 60),
                date_time: times(n),
                extra: strings(n, 70),
            },
        }
    }

    /// The columns as a batch of the declared `schema`.
    fn finish(mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let generated = default_schema();
        let row_fields = |name: &str| match generated.field_with_name(name).map(Field::data_type) {
            Ok(DataType::Struct(fields)) => fields.clone(),
            _ => Fields::empty(),
        };
        let kind_nulls = |kind: Kind| {
            NullBuffer::from(self.kinds.iter().map(|k| *k == kind).collect::<Vec<_>>())
        };
        let p = &mut self.person;
        let person: Vec<ArrayRef> = vec![
            Arc::new(p.id.finish()),
            Arc::new(p.name.finish()),
            Arc::new(p.email.finish()),
            Arc::new(p.credit_card.finish()),
            Arc::new(p.city.finish()),
            Arc::new(p.state.finish()),
            Arc::new(p.date_time.finish()),
            Arc::new(p.extra.finish()),
        ];
        let a = &mut self.auction;
        let auction: Vec<ArrayRef> = vec![
            Arc::new(a.id.finish()),
            Arc::new(a.item_name.finish()),
            Arc::new(a.description.finish()),
            Arc::new(a.initial_bid.finish()),
            Arc::new(a.reserve.finish()),
            Arc::new(a.date_time.finish()),
            Arc::new(a.expires.finish()),
            Arc::new(a.seller.finish()),
            Arc::new(a.category.finish()),
            Arc::new(a.extra.finish()),
        ];
        let b = &mut self.bid;
        let bid: Vec<ArrayRef> = vec![
            Arc::new(b.auction.finish()),
            Arc::new(b.bidder.finish()),
            Arc::new(b.price.finish()),
            Arc::new(b.channel.finish()),
            Arc::new(b.url.finish()),
            Arc::new(b.date_time.finish()),
            Arc::new(b.extra.finish()),
        ];
        let rows = [
            ("person", person, kind_nulls(Kind::Person)),
            ("auction", auction, kind_nulls(Kind::Auction)),
            ("bid", bid, kind_nulls(Kind::Bid)),
        ];
        let event_type: ArrayRef = Arc::new(self.event_type.finish());
        let date_time: ArrayRef = Arc::new(self.date_time.finish());
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column = match (field.name().as_str(), field.data_type()) {
                ("event_type", _) => as_type(&event_type, field)?,
                ("dateTime", _) => as_type(&date_time, field)?,
                (name, DataType::Struct(declared)) => {
                    let Some((_, children, nulls)) = rows.iter().find(|(n, _, _)| *n == name)
                    else {
                        return Err(unknown(name));
                    };
                    let generated = row_fields(name);
                    let picked = declared
                        .iter()
                        .map(|f| {
                            let i = generated
                                .iter()
                                .position(|g| g.name() == f.name())
                                .ok_or_else(|| unknown(&format!("{name}.{}", f.name())))?;
                            as_type(&children[i], f)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Arc::new(StructArray::try_new(
                        declared.clone(),
                        picked,
                        Some(nulls.clone()),
                    )?)
                }
                (name, _) => {
                    return Err(EngineError::connector(
                        "nexmark",
                        format!("column '{name}' must be a ROW of the event's fields"),
                    ))
                }
            };
            columns.push(column);
        }
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

fn unknown(name: &str) -> EngineError {
    EngineError::connector("nexmark", format!("no generated column {name}"))
}

/// `array` as the type `field` declares.
fn as_type(array: &ArrayRef, field: &Field) -> Result<ArrayRef> {
    if array.data_type() == field.data_type() {
        Ok(array.clone())
    } else {
        Ok(cast(array, field.data_type())?)
    }
}
