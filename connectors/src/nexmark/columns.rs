//! Nexmark events written straight into Arrow buffers: per event one
//! seeded RNG, its values appended to the columns of its kind, no
//! per-event structs or strings.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, Int32Array, Int64Array, StringArray, StructArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
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
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// Whether the values of each kind are read: events of a kind nobody
    /// reads are not generated, only timed (each event has its own RNG, so
    /// this changes no other event). A row column read only for its
    /// `dateTime` needs no generated values: that is the event's time.
    pub person: bool,
    pub auction: bool,
    pub bid: bool,
    /// The `extra` padding of each kind: the last values drawn from an
    /// event's RNG, so they can be left out without changing the others.
    pub person_extra: bool,
    pub auction_extra: bool,
    pub bid_extra: bool,
    /// Row columns of which only these fields are read; the others are
    /// left null ([`weir_connectors::TableSpec::read_fields`]).
    read_fields: BTreeMap<String, BTreeSet<String>>,
}

impl Wanted {
    pub fn of(schema: &SchemaRef, read_fields: &BTreeMap<String, BTreeSet<String>>) -> Self {
        let read = |column: &str| -> Vec<String> {
            let Ok(DataType::Struct(fields)) =
                schema.field_with_name(column).map(|f| f.data_type())
            else {
                return Vec::new();
            };
            fields
                .iter()
                .map(|f| f.name().clone())
                .filter(|f| read_fields.get(column).is_none_or(|read| read.contains(f)))
                .collect()
        };
        let generated = |column: &str| read(column).iter().any(|f| f != "dateTime");
        let has_extra = |column: &str| read(column).iter().any(|f| f == "extra");
        Wanted {
            person: generated("person"),
            auction: generated("auction"),
            bid: generated("bid"),
            person_extra: has_extra("person"),
            auction_extra: has_extra("auction"),
            bid_extra: has_extra("bid"),
            read_fields: read_fields.clone(),
        }
    }

    /// Every declared field read.
    #[cfg(test)]
    pub fn default_for(schema: &SchemaRef) -> Self {
        Self::of(schema, &BTreeMap::new())
    }

    /// Whether `field` of row column `column` is read.
    fn reads(&self, column: &str, field: &str) -> bool {
        self.read_fields
            .get(column)
            .is_none_or(|read| read.contains(field))
    }
}

/// Generates events `offset, offset + step, ...` of a model.
pub struct ColumnarGenerator {
    model: Arc<Model>,
    offset: u64,
    step: u64,
    wanted: Wanted,
    /// The hot channels' URLs.
    hot_urls: Arc<Vec<String>>,
    nulls: NullColumns,
}

/// All-null arrays of the batch length, made once per type and length: a
/// field nobody reads is the same array in every batch.
#[derive(Default)]
struct NullColumns {
    rows: usize,
    arrays: Vec<(DataType, ArrayRef)>,
}

impl NullColumns {
    fn get(&mut self, data_type: &DataType, rows: usize) -> ArrayRef {
        if rows != self.rows {
            self.arrays.clear();
            self.rows = rows;
        }
        if let Some((_, array)) = self.arrays.iter().find(|(t, _)| t == data_type) {
            return array.clone();
        }
        let array = new_null_array(data_type, rows);
        self.arrays.push((data_type.clone(), array.clone()));
        array
    }
}

impl ColumnarGenerator {
    pub fn new(model: Arc<Model>, offset: u64, step: u64, wanted: Wanted) -> Self {
        let hot_urls = Arc::new(model.cfg.hot_urls.clone());
        ColumnarGenerator {
            model,
            offset,
            step: step.max(1),
            wanted,
            hot_urls,
            nulls: NullColumns::default(),
        }
    }

    /// The next `n` events as a batch of `schema` (Flink's Nexmark table or
    /// any subset of its columns and fields, in any order and castable
    /// types).
    pub fn next_batch(&mut self, n: usize, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut columns = Columns::new(n, &self.wanted);
        for _ in 0..n {
            let number = self.model.event_number(self.offset);
            self.offset += self.step;
            self.event(number, &mut columns);
        }
        columns.finish(schema, &self.wanted, &mut self.nulls)
    }

    fn event(&mut self, number: usize, out: &mut Columns) {
        let model = Arc::clone(&self.model);
        let cfg = &model.cfg;
        let id = cfg.first_event_id + number;
        let time = model.timestamp(number);
        let kind = model.kind(number);
        out.kinds.push(kind);
        out.date_time.push(time as i64);
        let wanted = match kind {
            Kind::Person => self.wanted.person,
            Kind::Auction => self.wanted.auction,
            Kind::Bid => self.wanted.bid,
        };
        // Every other generated kind holds a placeholder in this row.
        if kind != Kind::Person && self.wanted.person {
            out.person.pad();
        }
        if kind != Kind::Auction && self.wanted.auction {
            out.auction.pad();
        }
        if kind != Kind::Bid && self.wanted.bid {
            out.bid.pad();
        }
        if !wanted {
            return;
        }
        let rng = &mut SmallRng::seed_from_u64(id as u64);
        match kind {
            Kind::Person => {
                let p = &mut out.person;
                p.id.push((model.last_person(id) + cfg.first_person_id) as i64);
                p.name.push(pick(&cfg.first_names, rng));
                p.name.value.push(b' ');
                p.name.push(pick(&cfg.last_names, rng));
                let mut size = p.name.end();
                letters(rng, 7, &mut p.email.value);
                p.email.value.push(b'@');
                letters(rng, 5, &mut p.email.value);
                p.email.push(".com");
                size += p.email.end();
                for i in 0..4 {
                    if i > 0 {
                        p.credit_card.value.push(b' ');
                    }
                    // Drawn as an `i32`: rand's rejection zone depends on the type.
                    let group: i32 = rng.gen_range(0..10000);
                    push_padded(&mut p.credit_card.value, group);
                }
                size += p.credit_card.end();
                let city = pick(&cfg.us_cities, rng);
                let state = pick(&cfg.us_states, rng);
                p.city.push(city);
                p.city.end();
                p.state.push(state);
                p.state.end();
                size += 8 + city.len() + state.len();
                if self.wanted.person_extra {
                    extra(rng, size, cfg.avg_person_byte_size, &mut p.extra.value);
                }
                p.extra.end();
            }
            Kind::Auction => {
                let a = &mut out.auction;
                a.id.push((model.last_auction(id) + cfg.first_auction_id) as i64);
                letters(rng, 20, &mut a.item_name.value);
                a.item_name.end();
                letters(rng, 100, &mut a.description.value);
                a.description.end();
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
                a.initial_bid.push(initial_bid as i64);
                a.reserve.push(reserve as i64);
                a.expires.push(expires as i64);
                a.seller.push((seller + cfg.first_person_id) as i64);
                a.category.push(category as i64);
                let size = 8 + 20 + 100 + 8 + 8 + 8 + 8 + 8;
                if self.wanted.auction_extra {
                    extra(rng, size, cfg.avg_auction_byte_size, &mut a.extra.value);
                }
                a.extra.end();
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
                b.auction.push((auction + cfg.first_auction_id) as i64);
                b.bidder.push((bidder + cfg.first_person_id) as i64);
                b.price.push(price as i64);
                b.channel.push(channel);
                b.channel.end();
                b.url.push(url);
                b.url.end();
                if self.wanted.bid_extra {
                    extra(rng, 32, cfg.avg_bid_byte_size, &mut b.extra.value);
                }
                b.extra.end();
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
fn push_padded(out: &mut Vec<u8>, value: i32) {
    for divisor in [1000, 100, 10, 1] {
        out.push(b'0' + ((value / divisor) % 10) as u8);
    }
}

/// A string column written in place: an event appends its bytes to
/// `value` and then ends the row, so nothing is copied twice.
struct Text {
    offsets: Vec<i32>,
    value: Vec<u8>,
}

impl Text {
    fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Text {
            offsets,
            value: Vec::with_capacity(rows * bytes),
        }
    }

    fn push(&mut self, text: &str) {
        self.value.extend_from_slice(text.as_bytes());
    }

    /// Ends the current row; returns its length in bytes.
    fn end(&mut self) -> usize {
        let start = self.offsets.last().copied().unwrap_or(0) as usize;
        // A batch's text is far below 2 GiB; were it not, the offsets stop
        // growing and `finish` reports the column as invalid.
        self.offsets
            .push(i32::try_from(self.value.len()).unwrap_or(i32::MAX));
        self.value.len().saturating_sub(start)
    }

    fn finish(self, nulls: &NullBuffer) -> Result<ArrayRef> {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        Ok(Arc::new(StringArray::try_new(
            offsets,
            self.value.into(),
            Some(nulls.clone()),
        )?))
    }
}

fn ints(values: Vec<i64>, nulls: &NullBuffer) -> ArrayRef {
    Arc::new(Int64Array::new(values.into(), Some(nulls.clone())))
}

fn times(values: Vec<i64>, nulls: &NullBuffer) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::new(
        values.into(),
        Some(nulls.clone()),
    ))
}

/// The generated fields of people (their `dateTime` is the event's).
struct PersonColumns {
    id: Vec<i64>,
    name: Text,
    email: Text,
    credit_card: Text,
    city: Text,
    state: Text,
    extra: Text,
}

/// The generated fields of auctions (their `dateTime` is the event's).
struct AuctionColumns {
    id: Vec<i64>,
    item_name: Text,
    description: Text,
    initial_bid: Vec<i64>,
    reserve: Vec<i64>,
    expires: Vec<i64>,
    seller: Vec<i64>,
    category: Vec<i64>,
    extra: Text,
}

/// The generated fields of bids (their `dateTime` is the event's).
struct BidColumns {
    auction: Vec<i64>,
    bidder: Vec<i64>,
    price: Vec<i64>,
    channel: Text,
    url: Text,
    extra: Text,
}

// An event of another kind leaves a placeholder in each field, hidden by
// the row column's nulls.
impl PersonColumns {
    fn new(n: usize) -> Self {
        PersonColumns {
            id: Vec::with_capacity(n),
            name: Text::with_capacity(n, 0),
            email: Text::with_capacity(n, 0),
            credit_card: Text::with_capacity(n, 0),
            city: Text::with_capacity(n, 0),
            state: Text::with_capacity(n, 0),
            extra: Text::with_capacity(n / 8 + 1, 150),
        }
    }

    fn pad(&mut self) {
        self.id.push(0);
        for text in [
            &mut self.name,
            &mut self.email,
            &mut self.credit_card,
            &mut self.city,
            &mut self.state,
            &mut self.extra,
        ] {
            text.end();
        }
    }

    /// The fields in [`default_schema`]'s order.
    fn finish(self, date_time: ArrayRef, nulls: &NullBuffer) -> Result<Vec<ArrayRef>> {
        Ok(vec![
            ints(self.id, nulls),
            self.name.finish(nulls)?,
            self.email.finish(nulls)?,
            self.credit_card.finish(nulls)?,
            self.city.finish(nulls)?,
            self.state.finish(nulls)?,
            date_time,
            self.extra.finish(nulls)?,
        ])
    }
}

impl AuctionColumns {
    fn new(n: usize) -> Self {
        let few = n / 8 + 1;
        AuctionColumns {
            id: Vec::with_capacity(n),
            item_name: Text::with_capacity(few, 20),
            description: Text::with_capacity(few, 100),
            initial_bid: Vec::with_capacity(n),
            reserve: Vec::with_capacity(n),
            expires: Vec::with_capacity(n),
            seller: Vec::with_capacity(n),
            category: Vec::with_capacity(n),
            extra: Text::with_capacity(few, 330),
        }
    }

    fn pad(&mut self) {
        for int in [
            &mut self.id,
            &mut self.initial_bid,
            &mut self.reserve,
            &mut self.expires,
            &mut self.seller,
            &mut self.category,
        ] {
            int.push(0);
        }
        for text in [&mut self.item_name, &mut self.description, &mut self.extra] {
            text.end();
        }
    }

    fn finish(self, date_time: ArrayRef, nulls: &NullBuffer) -> Result<Vec<ArrayRef>> {
        Ok(vec![
            ints(self.id, nulls),
            self.item_name.finish(nulls)?,
            self.description.finish(nulls)?,
            ints(self.initial_bid, nulls),
            ints(self.reserve, nulls),
            date_time,
            times(self.expires, nulls),
            ints(self.seller, nulls),
            ints(self.category, nulls),
            self.extra.finish(nulls)?,
        ])
    }
}

impl BidColumns {
    fn new(n: usize) -> Self {
        BidColumns {
            auction: Vec::with_capacity(n),
            bidder: Vec::with_capacity(n),
            price: Vec::with_capacity(n),
            channel: Text::with_capacity(n, 12),
            url: Text::with_capacity(n, 60),
            extra: Text::with_capacity(n, 70),
        }
    }

    fn pad(&mut self) {
        for int in [&mut self.auction, &mut self.bidder, &mut self.price] {
            int.push(0);
        }
        for text in [&mut self.channel, &mut self.url, &mut self.extra] {
            text.end();
        }
    }

    fn finish(self, date_time: ArrayRef, nulls: &NullBuffer) -> Result<Vec<ArrayRef>> {
        Ok(vec![
            ints(self.auction, nulls),
            ints(self.bidder, nulls),
            ints(self.price, nulls),
            self.channel.finish(nulls)?,
            self.url.finish(nulls)?,
            date_time,
            self.extra.finish(nulls)?,
        ])
    }
}

/// The generated columns of one batch.
struct Columns {
    date_time: Vec<i64>,
    kinds: Vec<Kind>,
    /// Each kind's fields, when that kind is generated.
    person: PersonColumns,
    auction: AuctionColumns,
    bid: BidColumns,
}

impl Columns {
    fn new(n: usize, wanted: &Wanted) -> Self {
        // Only the generated kinds reserve room.
        let rows = |generated: bool| if generated { n } else { 0 };
        Columns {
            date_time: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            person: PersonColumns::new(rows(wanted.person)),
            auction: AuctionColumns::new(rows(wanted.auction)),
            bid: BidColumns::new(rows(wanted.bid)),
        }
    }

    /// The columns as a batch of the declared `schema`.
    fn finish(
        self,
        schema: &SchemaRef,
        wanted: &Wanted,
        null_columns: &mut NullColumns,
    ) -> Result<RecordBatch> {
        let Columns {
            date_time,
            kinds,
            person,
            auction,
            bid,
        } = self;
        let rows = kinds.len();
        let event_type: ArrayRef = Arc::new(Int32Array::from_iter_values(kinds.iter().map(
            |kind| match kind {
                Kind::Person => 0,
                Kind::Auction => 1,
                Kind::Bid => 2,
            },
        )));
        let date_time = ScalarBuffer::from(date_time);
        let event_time: ArrayRef =
            Arc::new(TimestampMillisecondArray::new(date_time.clone(), None));
        let kind_nulls = |kind: Kind| NullBuffer::from_iter(kinds.iter().map(|k| *k == kind));
        // A row column's `dateTime`: the event's, where the event is of its kind.
        let kind_time = |nulls: &NullBuffer| -> ArrayRef {
            Arc::new(TimestampMillisecondArray::new(
                date_time.clone(),
                Some(nulls.clone()),
            ))
        };
        let (person_nulls, auction_nulls, bid_nulls) = (
            kind_nulls(Kind::Person),
            kind_nulls(Kind::Auction),
            kind_nulls(Kind::Bid),
        );
        // Each row column's fields in `default_schema`'s order; none when
        // its kind is not generated (then only its `dateTime` is declared).
        let generated_rows = [
            (
                "person",
                match wanted.person {
                    true => person.finish(kind_time(&person_nulls), &person_nulls)?,
                    false => Vec::new(),
                },
                person_nulls,
            ),
            (
                "auction",
                match wanted.auction {
                    true => auction.finish(kind_time(&auction_nulls), &auction_nulls)?,
                    false => Vec::new(),
                },
                auction_nulls,
            ),
            (
                "bid",
                match wanted.bid {
                    true => bid.finish(kind_time(&bid_nulls), &bid_nulls)?,
                    false => Vec::new(),
                },
                bid_nulls,
            ),
        ];
        let generated = default_schema();
        let row_fields = |name: &str| match generated.field_with_name(name).map(Field::data_type) {
            Ok(DataType::Struct(fields)) => fields.clone(),
            _ => Fields::empty(),
        };
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column = match (field.name().as_str(), field.data_type()) {
                ("event_type", _) => as_type(&event_type, field)?,
                ("dateTime", _) => as_type(&event_time, field)?,
                (name, DataType::Struct(declared)) => {
                    let Some((_, children, nulls)) =
                        generated_rows.iter().find(|(n, _, _)| *n == name)
                    else {
                        return Err(unknown(name));
                    };
                    let generated = row_fields(name);
                    let picked = declared
                        .iter()
                        .map(|f| {
                            if f.name() == "dateTime" {
                                return as_type(&kind_time(nulls), f);
                            }
                            if !wanted.reads(name, f.name()) {
                                return Ok(null_columns.get(f.data_type(), rows));
                            }
                            let child = generated
                                .iter()
                                .position(|g| g.name() == f.name())
                                .and_then(|i| children.get(i))
                                .ok_or_else(|| unknown(&format!("{name}.{}", f.name())))?;
                            as_type(child, f)
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
