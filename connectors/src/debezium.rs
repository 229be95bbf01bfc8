//! `'format' = 'debezium-json'`: change events as Debezium writes them,
//! read and written as Flink's format does.
//!
//! A record is `{"before": {...}, "after": {...}, "op": "c"}` (inside
//! `"payload"` with `'debezium-json.schema-include' = 'true'`). Reading,
//! `c` (create) and `r` (snapshot read) are `+I` of `after`, `u` (update)
//! is `-U` of `before` then `+U` of `after`, `d` (delete) is `-D` of
//! `before`; a record without the image its `op` needs, or with another
//! `op`, is bad. Writing, as Flink's serializer: `+I` and `+U` become
//! `{"before": null, "after": row, "op": "c"}`, `-U` and `-D` become
//! `{"before": row, "after": null, "op": "d"}`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray, StructArray, UInt32Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json;
use datafusion::arrow::record_batch::RecordBatch;
use weir_engine::changelog::{attach_kinds, kind_array, kinds_of, without_kinds, RowKind};

/// Where the change sits in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// `before`, `after` and `op` at the top.
    Plain,
    /// Inside `payload`, beside Debezium's `schema`.
    WithSchema,
}

/// The record schema of `data`'s rows: `before` and `after` as rows of
/// its columns, and `op`.
pub fn envelope_schema(data: &Schema, envelope: Envelope) -> SchemaRef {
    let row = DataType::Struct(Fields::from(
        data.fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let change = Fields::from(vec![
        Field::new("before", row.clone(), true),
        Field::new("after", row, true),
        Field::new("op", DataType::Utf8, true),
    ]);
    match envelope {
        Envelope::Plain => Arc::new(Schema::new(change)),
        Envelope::WithSchema => Arc::new(Schema::new(vec![Field::new(
            "payload",
            DataType::Struct(change),
            true,
        )])),
    }
}

/// The changes of decoded records (of [`envelope_schema`]): rows of
/// `data` with their kinds. The error names the first record at fault.
pub fn changes(records: &RecordBatch, data: &SchemaRef) -> Result<RecordBatch, String> {
    let change = match records.column_by_name("payload") {
        Some(payload) => payload.as_struct().clone(),
        None => StructArray::from(records.clone()),
    };
    let column = |name: &str| {
        change
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| format!("no '{name}' in the change"))
    };
    let (before, after) = (column("before")?, column("after")?);
    let op = column("op")?;
    let op = op.as_string::<i32>();
    // Per output row: which image of which record.
    let mut images: Vec<(bool, u32)> = Vec::with_capacity(records.num_rows());
    let mut kinds = Vec::with_capacity(records.num_rows());
    for i in 0..records.num_rows() {
        let has = |image: &ArrayRef| change.is_valid(i) && image.is_valid(i);
        let needs = |image: &ArrayRef, name: &str| {
            if has(image) {
                Ok(())
            } else {
                Err(format!("a '{}' change without '{name}'", op.value(i)))
            }
        };
        let at = i as u32;
        match (change.is_valid(i) && op.is_valid(i)).then(|| op.value(i)) {
            Some("c") | Some("r") => {
                needs(&after, "after")?;
                images.push((true, at));
                kinds.push(RowKind::Insert);
            }
            Some("u") => {
                needs(&before, "before")?;
                needs(&after, "after")?;
                images.extend([(false, at), (true, at)]);
                kinds.extend([RowKind::UpdateBefore, RowKind::UpdateAfter]);
            }
            Some("d") => {
                needs(&before, "before")?;
                images.push((false, at));
                kinds.push(RowKind::Delete);
            }
            Some(other) => return Err(format!("unknown op '{other}' (c, r, u or d)")),
            None => return Err("no 'op' in the change".into()),
        }
    }
    // Each output column: the field of before or after, per row.
    let field_of = |image: &ArrayRef, name: &str| -> Result<ArrayRef, String> {
        image
            .as_struct()
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| format!("no field '{name}'"))
    };
    let mut columns = Vec::with_capacity(data.fields().len());
    for field in data.fields() {
        let (b, a) = (
            field_of(&before, field.name())?,
            field_of(&after, field.name())?,
        );
        let both = datafusion::arrow::compute::concat(&[b.as_ref(), a.as_ref()])
            .map_err(|e| e.to_string())?;
        let n = records.num_rows() as u32;
        let indices =
            UInt32Array::from_iter_values(
                images
                    .iter()
                    .map(|(is_after, i)| if *is_after { n + i } else { *i }),
            );
        columns.push(take(both.as_ref(), &indices, None).map_err(|e| e.to_string())?);
    }
    let rows = RecordBatch::try_new(data.clone(), columns).map_err(|e| e.to_string())?;
    attach_kinds(&rows, kind_array(&kinds)).map_err(|e| e.to_string())
}

/// `batch`'s changes (its row-kind column; all inserts without one) as
/// Debezium JSON lines.
pub fn encode(
    batch: &RecordBatch,
    envelope: Envelope,
    out: &mut Vec<u8>,
) -> Result<(), ArrowError> {
    let kinds = kinds_of(batch).map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
    let data = without_kinds(batch);
    let schema = envelope_schema(data.schema_ref(), Envelope::Plain);
    let row_fields = match schema.field(0).data_type() {
        DataType::Struct(fields) => fields.clone(),
        _ => return Err(ArrowError::SchemaError("no row type".into())),
    };
    let image = |present: bool| -> Result<ArrayRef, ArrowError> {
        let nulls = NullBuffer::from(
            kinds
                .iter()
                .map(|k| k.is_accumulate() == present)
                .collect::<Vec<_>>(),
        );
        Ok(Arc::new(StructArray::try_new(
            row_fields.clone(),
            data.columns().to_vec(),
            Some(nulls),
        )?))
    };
    let op: ArrayRef = Arc::new(StringArray::from_iter_values(kinds.iter().map(|k| {
        if k.is_accumulate() {
            "c"
        } else {
            "d"
        }
    })));
    let change = RecordBatch::try_new(schema, vec![image(false)?, image(true)?, op])?;
    let change = match envelope {
        Envelope::Plain => change,
        Envelope::WithSchema => {
            let payload = StructArray::from(change);
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new(
                    "payload",
                    payload.data_type().clone(),
                    true,
                )])),
                vec![Arc::new(payload)],
            )?
        }
    };
    let mut writer = json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, json::writer::LineDelimited>(out);
    writer.write(&change)?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    fn data() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn decode(lines: &str, envelope: Envelope) -> RecordBatch {
        let mut decoder = json::ReaderBuilder::new(envelope_schema(&data(), envelope))
            .build_decoder()
            .unwrap();
        decoder.decode(lines.as_bytes()).unwrap();
        decoder.flush().unwrap().unwrap()
    }

    #[test]
    fn creates_updates_and_deletes_become_row_kinds_and_back() {
        let lines = r#"{"before": null, "after": {"id": 1, "name": "a"}, "op": "c"}
{"before": {"id": 1, "name": "a"}, "after": {"id": 1, "name": "b"}, "op": "u"}
{"before": {"id": 1, "name": "b"}, "after": null, "op": "d"}
{"after": {"id": 2, "name": null}, "op": "r"}
"#;
        let decoded = changes(&decode(lines, Envelope::Plain), &data()).unwrap();
        let shown = weir_engine::changelog::with_op_column(&decoded).unwrap();
        datafusion::assert_batches_eq!(
            [
                "+----+----+------+",
                "| op | id | name |",
                "+----+----+------+",
                "| +I | 1  | a    |",
                "| -U | 1  | a    |",
                "| +U | 1  | b    |",
                "| -D | 1  | b    |",
                "| +I | 2  |      |",
                "+----+----+------+",
            ],
            &[shown]
        );
        let mut out = Vec::new();
        encode(&decoded, Envelope::WithSchema, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.lines().nth(1).unwrap(),
            r#"{"payload":{"before":{"id":1,"name":"a"},"after":null,"op":"d"}}"#
        );
        let back = changes(&decode(&text, Envelope::WithSchema), &data()).unwrap();
        let ids = back
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values().to_vec(), vec![1, 1, 1, 1, 2]);
        assert_eq!(
            kinds_of(&back).unwrap(),
            vec![
                RowKind::Insert,
                RowKind::Delete,
                RowKind::Insert,
                RowKind::Delete,
                RowKind::Insert
            ]
        );
    }

    #[test]
    fn a_change_without_the_image_it_needs_is_bad() {
        let error = changes(
            &decode(
                r#"{"before": null, "after": null, "op": "u"}"#,
                Envelope::Plain,
            ),
            &data(),
        )
        .unwrap_err();
        assert!(error.contains("without 'before'"), "{error}");
        let error = changes(&decode(r#"{"op": "x"}"#, Envelope::Plain), &data()).unwrap_err();
        assert!(error.contains("unknown op 'x'"), "{error}");
    }
}
