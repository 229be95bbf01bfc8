//! `'sink.spill.path'`: the spill store of a sink's circuit breaker
//! (`weir_engine::spill`). Spilled rows are Parquet part files written by
//! the filesystem connector's exactly-once sink under
//! `{spill.path}/{sink}/`, so they commit with the checkpoints; a part
//! file's name carries its subtask and checkpoint
//! (`part-{writer}-{subtask}-{checkpoint}-{sequence}.parquet`), which is
//! how they are read back in order.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use weir_engine::spill::{SpillFile, SpillStore};
use weir_engine::{EngineError, Result, Sink, SinkFactory, SubtaskInfo};

use crate::filesystem::FilesystemConnector;
use crate::options::Options;
use crate::registry::{Connector, ConnectorError, TableSpec};
use crate::store::{resolve, Location};

/// One sink's spill files.
pub struct ParquetSpill {
    location: Location,
    writers: SinkFactory,
}

impl ParquetSpill {
    /// The spill of sink `name` (rows of `schema`) under `path`; `options`
    /// carry the object store's settings, as for the sink's own path.
    pub fn new(
        path: &str,
        name: &str,
        schema: SchemaRef,
        options: &Options,
    ) -> std::result::Result<Self, ConnectorError> {
        let dir = format!("{}/{name}", path.trim_end_matches('/'));
        let mut spill_options: Vec<(String, String)> = options
            .iter()
            .filter(|(k, _)| k.starts_with("s3.") || k.starts_with("aws."))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spill_options.push(("path".into(), dir.clone()));
        spill_options.push(("format".into(), "parquet".into()));
        let spec = TableSpec {
            name: format!("{name} (spill)"),
            schema,
            options: Options::new(spill_options),
            partitioned_by: Vec::new(),
            bad_data: crate::deadletter::BadDataPolicy::Fail,
            metadata: Vec::new(),
            checkpointing: true,
            primary_key: Vec::new(),
            read_fields: Default::default(),
        };
        let writers = FilesystemConnector.sink(&spec)?;
        let location = resolve(&dir, &spec.options, true)?;
        Ok(ParquetSpill { location, writers })
    }
}

/// The subtask and checkpoint in a part file's name, if it is one.
fn parse(name: &str) -> Option<(usize, u64)> {
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let mut parts = stem.rsplit('-');
    let _sequence = parts.next()?;
    let epoch = parts.next()?.parse().ok()?;
    let subtask = parts.next()?.parse().ok()?;
    Some((subtask, epoch))
}

fn store_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::connector("spill", e.to_string())
}

#[async_trait]
impl SpillStore for ParquetSpill {
    fn writer(&self, subtask: SubtaskInfo) -> Result<Box<dyn Sink>> {
        (self.writers)(subtask)
    }

    async fn files(&self, subtask: usize) -> Result<Vec<SpillFile>> {
        let listed = self
            .location
            .store
            .list_with_delimiter(Some(&self.location.prefix))
            .await
            .map_err(store_error)?;
        let mut files: Vec<SpillFile> = listed
            .objects
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.to_string();
                let (of, epoch) = parse(&name)?;
                (of == subtask).then(|| SpillFile {
                    epoch,
                    name: meta.location.to_string(),
                })
            })
            .collect();
        files.sort();
        Ok(files)
    }

    async fn read(&self, file: &SpillFile) -> Result<Vec<RecordBatch>> {
        let bytes: Bytes = self
            .location
            .store
            .get(&Path::from(file.name.as_str()))
            .await
            .map_err(store_error)?
            .bytes()
            .await
            .map_err(store_error)?;
        ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|builder| builder.build())
            .map_err(store_error)?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(store_error)
    }

    async fn delete(&self, file: &SpillFile) -> Result<()> {
        match self
            .location
            .store
            .delete(&Path::from(file.name.as_str()))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    fn describe(&self) -> String {
        self.location.display.clone()
    }
}

/// The breaker settings of a sink, from its `'sink.spill.*'` options
/// (`None` without a spill path).
pub fn spill_spec(
    name: &str,
    schema: SchemaRef,
    options: &Options,
) -> std::result::Result<Option<weir_engine::spill::SpillSpec>, ConnectorError> {
    let Some(path) = options.get("sink.spill.path") else {
        return Ok(None);
    };
    let latency_threshold = options
        .duration("sink.spill.latency-threshold")?
        .unwrap_or(std::time::Duration::from_millis(500));
    let trip_count = options
        .parse::<u32>("sink.spill.trip-count")?
        .unwrap_or(10)
        .max(1);
    let store = ParquetSpill::new(path, name, schema, options)?;
    Ok(Some(weir_engine::spill::SpillSpec {
        store: Arc::new(store),
        latency_threshold,
        trip_count,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_give_their_subtask_and_checkpoint() {
        assert_eq!(
            parse("part-a1b2c3d4-002-0000000017-0003.parquet"),
            Some((2, 17))
        );
        assert_eq!(parse("part-001-0000000005-0000.parquet"), Some((1, 5)));
        assert_eq!(parse("part-x-001-0000000005-0000.parquet.1f2e"), None);
        assert_eq!(parse("_staging"), None);
    }
}
