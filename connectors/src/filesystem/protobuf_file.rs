//! Files of protobuf messages (`'format' = 'protobuf'` on the filesystem
//! connector): each message preceded by its length as a varint, the one
//! framing protobuf defines for several messages in a row (Java's
//! `writeDelimitedTo` / `parseDelimitedFrom`, prost's
//! `encode_length_delimited`, `protoc --decode` over a delimited stream).
//!
//! A file is read whole (one request) and its messages decoded a batch at
//! a time by the decoder Kafka records use ([`ProtobufDecoder`]): a message
//! that does not decode, or a value that does not fit its column, is a
//! dead letter located `path@message N` (from 1); a length that runs past
//! the end of the file makes the rest one dead letter. A file's position
//! is the number of messages read, good or bad.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStore;
use weir_engine::{BadRecord, EngineError, Result};

use crate::format::Decoded;
use crate::protobuf::ProtobufDecoder;

/// The messages of one file, decoded.
pub(crate) struct ProtobufFileRows {
    /// Each batch with the number of messages it was decoded from.
    batches: VecDeque<(Decoded, u64)>,
    /// Messages in the file.
    pub total_rows: u64,
}

impl ProtobufFileRows {
    /// Reads and decodes `path`, skipping its first `skip` messages (read
    /// before a restore).
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        path: &Path,
        decoder: &ProtobufDecoder,
        batch_size: usize,
        skip: u64,
    ) -> Result<Self> {
        let failed = |e: &dyn std::fmt::Display| {
            EngineError::connector("filesystem", format!("{path}: {e}"))
        };
        let bytes: Bytes = super::read_whole(&store, path).await?;
        let (messages, broken) = delimited(&bytes);
        let total_rows = messages.len() as u64 + u64::from(broken.is_some());
        let locate = |i: usize| format!("{path}@message {}", i + 1);
        let mut batches = VecDeque::new();
        let first = (skip as usize).min(messages.len());
        for (n, chunk) in messages[first..].chunks(batch_size.max(1)).enumerate() {
            let start = first + n * batch_size.max(1);
            let decoded = decoder
                .decode_records(chunk, &|i| locate(start + i))
                .map_err(|e| failed(&e))?;
            batches.push_back((decoded, chunk.len() as u64));
        }
        if let (Some((offset, reason)), true) = (broken, skip <= messages.len() as u64) {
            let letter = BadRecord {
                stream: decoder.stream().to_string(),
                reason,
                location: locate(messages.len()),
                raw: bytes[offset..].to_vec(),
                kafka: None,
            };
            let decoded = Decoded {
                batch: None,
                bad: vec![(0, letter)],
            };
            batches.push_back((decoded, 1));
        }
        Ok(ProtobufFileRows {
            batches,
            total_rows,
        })
    }

    /// The next batch and the messages it was decoded from, if any is left.
    pub fn next_batch(&mut self) -> Option<(Decoded, u64)> {
        self.batches.pop_front()
    }
}

/// The messages of a length-delimited file, and where and why it breaks
/// off when its last length runs past the end.
fn delimited(bytes: &[u8]) -> (Vec<&[u8]>, Option<(usize, String)>) {
    let mut messages = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let mut rest = &bytes[at..];
        let length = match prost::decode_length_delimiter(&mut rest) {
            Ok(length) => length,
            Err(e) => return (messages, Some((at, format!("no message length: {e}")))),
        };
        let start = bytes.len() - rest.len();
        let Some(end) = start.checked_add(length).filter(|end| *end <= bytes.len()) else {
            let reason = format!(
                "a message of {length} bytes runs past the end of the file ({} bytes left)",
                rest.len()
            );
            return (messages, Some((at, reason)));
        };
        messages.push(&bytes[start..end]);
        at = end;
    }
    (messages, None)
}

/// Each message preceded by its length.
pub(crate) fn delimit(messages: Vec<Vec<u8>>, out: &mut Vec<u8>) {
    for message in messages {
        // Writing a length into a Vec cannot fail: it grows.
        let _ = prost::encode_length_delimiter(message.len(), out);
        out.extend(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::ProtobufConfig;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};
    use prost::Message;

    /// A file of messages `n: 1..=5` restored after `skip` of them reads
    /// the rest; its position counts the cut last one too.
    #[tokio::test]
    async fn a_restored_file_skips_the_messages_read_before() {
        let dir = tempfile::tempdir().unwrap();
        let proto = dir.path().join("n.proto");
        std::fs::write(&proto, "syntax = \"proto3\"; message N { int64 n = 1; }").unwrap();
        let config = ProtobufConfig {
            schema_file: proto.display().to_string(),
            message: "N".into(),
            read_default_values: false,
        };
        let descriptor = config.descriptor().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let decoder = ProtobufDecoder::new(&config, schema, "s".into()).unwrap();
        let messages = (1..=5)
            .map(|n| {
                let mut m = prost_reflect::DynamicMessage::new(descriptor.clone());
                m.set_field_by_name("n", prost_reflect::Value::I64(n));
                m.encode_to_vec()
            })
            .collect();
        let mut file = Vec::new();
        delimit(messages, &mut file);
        file.extend([9, 1]);
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("n.pb");
        store.put(&path, PutPayload::from(file)).await.unwrap();
        for (skip, expected_rows, expected_bad) in [
            (0, vec![1, 2, 3, 4, 5], 1),
            (2, vec![3, 4, 5], 1),
            (6, vec![], 0),
        ] {
            let mut rows = ProtobufFileRows::open(store.clone(), &path, &decoder, 2, skip)
                .await
                .unwrap();
            assert_eq!(rows.total_rows, 6);
            let (mut read, mut bad, mut counted) = (Vec::new(), 0, 0);
            while let Some((decoded, messages)) = rows.next_batch() {
                counted += messages;
                bad += decoded.bad.len();
                if let Some(batch) = decoded.batch {
                    read.extend(
                        batch
                            .column(0)
                            .as_primitive::<Int64Type>()
                            .values()
                            .iter()
                            .copied(),
                    );
                }
            }
            assert_eq!(read, expected_rows, "skip {skip}");
            assert_eq!(bad, expected_bad, "skip {skip}");
            assert_eq!(counted + skip, 6, "skip {skip}");
        }
    }

    #[test]
    fn delimited_messages_split_and_a_cut_one_is_reported() {
        let mut file = Vec::new();
        delimit(vec![b"ab".to_vec(), Vec::new(), vec![7; 200]], &mut file);
        let (messages, broken) = delimited(&file);
        assert_eq!(messages, [&b"ab"[..], &[][..], &[7; 200][..]]);
        assert_eq!(broken, None);
        // The last message cut short: the first two, and where it broke.
        let cut = &file[..file.len() - 1];
        let (messages, broken) = delimited(cut);
        assert_eq!(messages.len(), 2);
        let (at, reason) = broken.unwrap();
        assert_eq!(at, 4, "after 2+'ab' and 0");
        assert!(reason.contains("200 bytes runs past the end"), "{reason}");
    }
}
