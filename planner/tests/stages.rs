//! The cut of a job's graph into stages for the cluster mode
//! (`docs/cluster-protocol.md`): at sources and wherever rows leave a
//! stage (key shuffles, gathers), never inside a chain of forward edges.

use weir_engine::graph::{EdgeKind, Graph};
use weir_planner::{Planned, Planner};

fn job(text: &str) -> Graph {
    let mut planner = Planner::default();
    planner
        .settings_mut()
        .set("parallelism.default", "2")
        .unwrap();
    let statements = weir_sql::parse(text).unwrap();
    let mut graph = None;
    for statement in &statements {
        if let Planned::Job(job) = planner.plan(statement).unwrap() {
            graph = Some(job.graph);
        }
    }
    graph.expect("the text ends with an INSERT")
}

fn names(graph: &Graph, nodes: &[usize]) -> Vec<String> {
    nodes.iter().map(|n| graph.nodes[*n].name.clone()).collect()
}

const EVENTS: &str = "CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '1000');
    CREATE TABLE out (auction BIGINT, n BIGINT) WITH ('connector' = 'blackhole');";

/// A two-phase window aggregate: the source's chain up to the local
/// phase is one stage, the global phase and the sink another, fed by a
/// shuffle on the key.
#[test]
fn a_window_aggregate_is_two_stages() {
    let graph = job(&format!(
        "{EVENTS}
         INSERT INTO out SELECT bid.auction, count(*)
         FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
         WHERE event_type = 2 GROUP BY bid.auction, window_start, window_end;"
    ));
    let stages = graph.stages();
    assert_eq!(stages.len(), 2, "{graph}");
    assert!(stages[0].upstream.is_empty());
    assert_eq!(names(&graph, &stages[0].nodes)[0], "source: events");
    assert_eq!(
        names(&graph, &stages[0].nodes).last().unwrap(),
        "window aggregate (local)"
    );
    assert_eq!(
        names(&graph, &stages[1].nodes)[0],
        "window aggregate (global)"
    );
    assert_eq!(names(&graph, &stages[1].nodes).last().unwrap(), "sink: out");
    assert!(matches!(
        stages[1].upstream.as_slice(),
        [(0, EdgeKind::Shuffle { .. })]
    ));
    // Every node is in exactly one stage.
    let mut all: Vec<usize> = stages.iter().flat_map(|s| s.nodes.clone()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..graph.nodes.len()).collect::<Vec<_>>());
}

/// A join of two shuffled inputs starts a stage with two upstream stages.
#[test]
fn a_join_takes_two_upstream_stages() {
    let graph = job(&format!(
        "{EVENTS}
         CREATE STREAM more WITH ('connector' = 'nexmark', 'events.num' = '1000');
         CREATE VIEW bids AS SELECT bid.auction AS auction, bid.price AS price FROM events WHERE event_type = 2;
         CREATE VIEW more_bids AS SELECT bid.auction AS auction, bid.price AS price FROM more WHERE event_type = 2;
         INSERT INTO out SELECT a.auction, b.price FROM bids a JOIN more_bids b ON a.auction = b.auction;"
    ));
    let stages = graph.stages();
    let join = stages
        .iter()
        .find(|s| names(&graph, &s.nodes)[0].contains("join"))
        .unwrap_or_else(|| panic!("{graph}"));
    assert_eq!(join.upstream.len(), 2, "{graph}");
    assert!(join
        .upstream
        .iter()
        .all(|(_, kind)| matches!(kind, EdgeKind::Shuffle { .. })));
}
