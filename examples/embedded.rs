//! The embedded API: a windowed count over the Nexmark generator.
//!
//! Run with `cargo run --example embedded`.

use weir::arrow::util::pretty::pretty_format_batches;

#[tokio::main]
async fn main() -> Result<(), weir::WeirError> {
    let mut session = weir::Session::new();
    session
        .sql(
            "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '200000', 'base-time' = '1700000000000');
             CREATE VIEW bid AS SELECT bid.auction, bid.price, dateTime FROM events WHERE event_type = 2;",
        )
        .await?;
    let batches = session
        .query(
            "SELECT window_start, window_end, count(*) AS bids, max(price) AS top_price
             FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
             GROUP BY window_start, window_end",
        )
        .await?
        .collect()
        .await?;
    println!(
        "{}",
        pretty_format_batches(&batches).map_err(|e| weir::WeirError::Usage(e.to_string()))?
    );
    Ok(())
}
