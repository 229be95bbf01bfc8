//! One task's snapshot as one object: the state tables of every node of
//! its stage (the same Arrow IPC the local checkpoints write), after a
//! JSON index naming each table and the stage's fingerprint, so that a
//! changed job is refused instead of restored into the wrong operators.

use std::io::Cursor;

use bytes::Bytes;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};
use weir_engine::{EngineError, NodeId, Result, StateSnapshot};

#[derive(Serialize, Deserialize)]
struct Index {
    fingerprint: String,
    tables: Vec<Entry>,
}

/// A node's table (`None`: a node whose snapshot is empty), and the
/// length of its IPC bytes.
#[derive(Serialize, Deserialize)]
struct Entry {
    node: NodeId,
    table: Option<String>,
    bytes: usize,
}

fn error(e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("task snapshot", e)
}

/// `states` as one object: a 4-byte index length, the index, the tables.
pub fn encode(fingerprint: &str, states: &[(NodeId, StateSnapshot)]) -> Result<Bytes> {
    let mut index = Index {
        fingerprint: fingerprint.to_string(),
        tables: Vec::new(),
    };
    let mut body = Vec::new();
    for (node, state) in states {
        if state.tables.is_empty() {
            index.tables.push(Entry {
                node: *node,
                table: None,
                bytes: 0,
            });
        }
        for (name, batch) in &state.tables {
            let before = body.len();
            let mut writer = FileWriter::try_new(&mut body, batch.schema_ref())?;
            writer.write(batch)?;
            writer.finish()?;
            drop(writer);
            index.tables.push(Entry {
                node: *node,
                table: Some(name.clone()),
                bytes: body.len() - before,
            });
        }
    }
    let index = serde_json::to_vec(&index).map_err(error)?;
    let length = u32::try_from(index.len()).map_err(error)?;
    let mut out = Vec::with_capacity(4 + index.len() + body.len());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&index);
    out.extend_from_slice(&body);
    Ok(Bytes::from(out))
}

/// The snapshot [`encode`] wrote, if it was taken by a stage with
/// `fingerprint`.
pub fn decode(fingerprint: &str, object: &[u8]) -> Result<Vec<(NodeId, StateSnapshot)>> {
    let (length, rest) = object
        .split_first_chunk::<4>()
        .ok_or_else(|| error("too short"))?;
    let length = u32::from_be_bytes(*length) as usize;
    if rest.len() < length {
        return Err(error("index cut short"));
    }
    let (index, mut body) = rest.split_at(length);
    let index: Index = serde_json::from_slice(index).map_err(error)?;
    if index.fingerprint != fingerprint {
        return Err(error(
            "taken by a different job (its operators or tasks changed); start it under another pipeline.name",
        ));
    }
    let mut states: Vec<(NodeId, StateSnapshot)> = Vec::new();
    for entry in index.tables {
        if states.last().is_none_or(|(node, _)| *node != entry.node) {
            states.push((entry.node, StateSnapshot::default()));
        }
        let Some(name) = entry.table else {
            continue;
        };
        if body.len() < entry.bytes {
            return Err(error("a table cut short"));
        }
        let (table, rest) = body.split_at(entry.bytes);
        body = rest;
        let reader = FileReader::try_new(Cursor::new(table), None)?;
        let schema = reader.schema();
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        let batch = concat_batches(&schema, &batches)?;
        if let Some((_, state)) = states.last_mut() {
            state.tables.push((name, batch));
        }
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use super::*;

    fn table(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let states = vec![
            (
                0,
                StateSnapshot {
                    tables: vec![("offsets".into(), table(&[1, 2]))],
                },
            ),
            (1, StateSnapshot::default()),
            (
                2,
                StateSnapshot {
                    tables: vec![("a".into(), table(&[3])), ("b".into(), table(&[]))],
                },
            ),
        ];
        let object = encode("job", &states).unwrap();
        let back = decode("job", &object).unwrap();
        assert_eq!(back.len(), 3);
        for ((node, state), (node_back, state_back)) in states.iter().zip(&back) {
            assert_eq!(node, node_back);
            assert_eq!(state.tables, state_back.tables);
        }
        let refused = decode("another job", &object).unwrap_err().to_string();
        assert!(refused.contains("different job"), "{refused}");
    }
}
