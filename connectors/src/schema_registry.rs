//! A schema registry (Confluent's REST API, which Karapace, Apicurio and
//! Redpanda also serve) and its wire format: a zero byte, the schema id in
//! four big-endian bytes, then the record.
//!
//! Schemas are fetched by id once and kept by the decoders
//! ([`SchemaCache`]). A schema that refers to types of other subjects
//! (Confluent's schema references) comes with the text of each one it
//! refers to, fetched by subject and version, depth first: what the Avro
//! and Protobuf decoders need to compile it ([`RegisteredSchema`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::Field;
use parking_lot::Mutex;
use serde_json::Value;

use crate::options::Options;
use crate::registry::ConnectorError;

/// The schema registry's wire format starts with this byte.
pub(crate) const MAGIC: u8 = 0;

/// Where a schema registry is and how to log in (Flink's
/// `avro-confluent.*` options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    pub url: String,
    /// The subject written schemas are registered under.
    pub subject: Option<String>,
    /// `user:password` for basic auth.
    pub user_info: Option<String>,
    pub bearer_token: Option<String>,
}

impl RegistryConfig {
    /// From `avro-confluent.*`, or `<prefix>avro-confluent.*` (`value.`,
    /// `key.`) when the format was named by `value.format`/`key.format`.
    pub fn from_options(options: &Options, prefix: &str) -> Result<Self, ConnectorError> {
        RegistryConfig::of_format(options, prefix, "avro-confluent")
    }

    /// The options of registry format `format` (`avro-confluent`,
    /// `protobuf-confluent`): `<format>.url`, `<format>.subject`, ...
    pub fn of_format(
        options: &Options,
        prefix: &str,
        format: &str,
    ) -> Result<Self, ConnectorError> {
        let get = |name: &str| {
            let name = format!("{format}.{name}");
            options
                .get(&format!("{prefix}{name}"))
                .or_else(|| options.get(&name))
                .map(str::to_string)
        };
        let url = get("url").ok_or_else(|| {
            ConnectorError::option(
                &format!("{format}.url"),
                format!("is required with '{format}': the schema registry's address, e.g. 'http://localhost:8081'"),
            )
        })?;
        Ok(RegistryConfig {
            url: url.trim_end_matches('/').to_string(),
            subject: get("subject"),
            user_info: get("basic-auth.user-info"),
            bearer_token: get("bearer-auth.token"),
        })
    }

    /// The subject a topic's schemas go under: the configured one, or
    /// `<topic>-key` / `<topic>-value` (Confluent's topic-name strategy).
    pub fn subject_for(&self, topic: &str, is_key: bool) -> String {
        self.subject
            .clone()
            .unwrap_or_else(|| format!("{topic}-{}", if is_key { "key" } else { "value" }))
    }
}

/// Why a registry call failed: the registry could not be reached (the
/// caller tries again later), or it answered with a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    Unanswered(String),
    Refused(String),
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::Unanswered(e) | RegistryError::Refused(e) => f.write_str(e),
        }
    }
}

impl From<RegistryError> for String {
    fn from(error: RegistryError) -> String {
        error.to_string()
    }
}

/// What a decoder made of each writer schema it fetched, by registry id
/// (or why the schema cannot be used).
/// How deep references may nest: deeper is taken for a cycle.
const MAX_REFERENCE_DEPTH: usize = 32;

/// A schema as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    pub text: String,
    /// `AVRO` (what the registry means when it leaves the type out),
    /// `PROTOBUF` or `JSON`.
    pub schema_type: String,
    /// The schemas it refers to, directly or through one another, each by
    /// the name its reference gives (an Avro type's full name, a `.proto`
    /// file's import path), a referred one before those referring to it.
    pub references: Vec<(String, String)>,
}

pub(crate) type SchemaCache<T> = Mutex<HashMap<u32, Arc<Result<T, String>>>>;

/// A client of a schema registry's REST API (Confluent's, which Karapace,
/// Apicurio and Redpanda also serve).
#[derive(Debug, Clone)]
pub struct SchemaRegistry {
    config: RegistryConfig,
    client: reqwest::Client,
}

impl SchemaRegistry {
    pub fn new(config: RegistryConfig) -> Self {
        SchemaRegistry {
            config,
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Value, RegistryError> {
        let request = match (&self.config.user_info, &self.config.bearer_token) {
            (Some(user_info), _) => {
                let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
                request.basic_auth(user, Some(password))
            }
            (None, Some(token)) => request.bearer_auth(token),
            (None, None) => request,
        };
        let response = request
            .header("Accept", "application/vnd.schemaregistry.v1+json")
            .send()
            .await
            .map_err(|e| {
                RegistryError::Unanswered(format!(
                    "the schema registry at {} did not answer: {e}",
                    self.config.url
                ))
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            RegistryError::Unanswered(format!("the schema registry's answer broke off: {e}"))
        })?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(RegistryError::Refused(format!(
                "{what}: the schema registry answered {status}: {message}"
            )));
        }
        Ok(value)
    }

    /// The schema with registry id `id`, with the schemas it refers to.
    pub async fn schema(&self, id: u32) -> Result<RegisteredSchema, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.config.url);
        let what = format!("schema id {id}");
        let value = self.call(self.client.get(url), &what).await?;
        self.registered(&value, &what).await
    }

    /// The schema an answer holds, with the schemas its references name
    /// (fetched by subject and version, theirs first).
    async fn registered(
        &self,
        value: &Value,
        what: &str,
    ) -> Result<RegisteredSchema, RegistryError> {
        let text = schema_text(value)
            .ok_or_else(|| RegistryError::Refused(format!("{what}: the answer holds no schema")))?;
        /// A schema whose references are being fetched: the name its own
        /// reference gives it (`None`: the schema asked for), the answer,
        /// and which of its references comes next.
        struct Pending {
            name: Option<String>,
            answer: Value,
            next: usize,
        }
        let mut references: Vec<(String, String)> = Vec::new();
        // Depth first, without recursion in an async fn.
        let mut pending = vec![Pending {
            name: None,
            answer: value.clone(),
            next: 0,
        }];
        while let Some(top) = pending.last_mut() {
            let listed = top.answer.get("references").and_then(Value::as_array);
            let reference = listed.and_then(|r| r.get(top.next)).cloned();
            top.next += 1;
            let Some(reference) = reference else {
                // Every reference of `top` is in: then `top` itself.
                if let Some(Pending {
                    name: Some(name),
                    answer,
                    ..
                }) = pending.pop()
                {
                    if let (Some(text), false) = (
                        schema_text(&answer),
                        references.iter().any(|(n, _)| *n == name),
                    ) {
                        references.push((name, text));
                    }
                }
                continue;
            };
            let field = |key: &str| match reference.get(key) {
                Some(Value::String(text)) => Some(text.clone()),
                Some(Value::Number(number)) => Some(number.to_string()),
                _ => None,
            };
            let (Some(name), Some(subject), Some(version)) =
                (field("name"), field("subject"), field("version"))
            else {
                return Err(RegistryError::Refused(format!(
                    "{what}: a reference without name, subject and version: {reference}"
                )));
            };
            if references.iter().any(|(n, _)| *n == name) {
                continue;
            }
            if pending.len() > MAX_REFERENCE_DEPTH {
                return Err(RegistryError::Refused(format!(
                    "{what}: references nest deeper than {MAX_REFERENCE_DEPTH} (a cycle?)"
                )));
            }
            let url = format!("{}/subjects/{subject}/versions/{version}", self.config.url);
            let referred =
                format!("{what}: reference '{name}' (subject '{subject}' version {version})");
            let answer = self.call(self.client.get(url), &referred).await?;
            pending.push(Pending {
                name: Some(name),
                answer,
                next: 0,
            });
        }
        Ok(RegisteredSchema {
            text,
            schema_type: value
                .get("schemaType")
                .and_then(Value::as_str)
                .unwrap_or("AVRO")
                .to_string(),
            references,
        })
    }

    /// Fetches the schemas of the wire-format `records` that `cache` does
    /// not hold yet, each made into what the decoder needs by `make`
    /// (given its id and the schema). A schema the registry refuses is
    /// kept as the reason its records are bad; a registry that does not
    /// answer is an error (the poll is tried again).
    pub(crate) async fn fetch_missing<T>(
        &self,
        records: &[&[u8]],
        cache: &SchemaCache<T>,
        make: impl Fn(u32, &RegisteredSchema) -> Result<T, String>,
    ) -> Result<(), String> {
        let mut missing: Vec<u32> = records
            .iter()
            .filter_map(|r| frame(r).ok().map(|(id, _)| id))
            .filter(|id| !cache.lock().contains_key(id))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        for id in missing {
            let made = match self.schema(id).await {
                Ok(schema) => make(id, &schema),
                Err(RegistryError::Unanswered(e)) => return Err(e),
                Err(RegistryError::Refused(e)) => Err(e),
            };
            cache.lock().insert(id, Arc::new(made));
        }
        Ok(())
    }

    /// Registers `schema` (of `schema_type`: `AVRO`, `PROTOBUF`) under
    /// `subject`, or finds it there, and returns its id.
    pub async fn register(
        &self,
        subject: &str,
        schema: &str,
        schema_type: &str,
    ) -> Result<u32, String> {
        let url = format!("{}/subjects/{subject}/versions", self.config.url);
        // Confluent's registry takes a missing type for Avro; some older
        // ones refuse the field, so Avro leaves it out.
        let body = match schema_type {
            "AVRO" => serde_json::json!({ "schema": schema }),
            _ => serde_json::json!({ "schema": schema, "schemaType": schema_type }),
        };
        let request = self
            .client
            .post(url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string());
        let value = self
            .call(request, &format!("registering under subject '{subject}'"))
            .await?;
        id_of(&value).ok_or_else(|| format!("subject '{subject}': the answer holds no id"))
    }

    /// The latest schema of `subject`, with its id.
    pub async fn latest(&self, subject: &str) -> Result<(u32, RegisteredSchema), String> {
        let url = format!("{}/subjects/{subject}/versions/latest", self.config.url);
        let what = format!("subject '{subject}'");
        let value = self.call(self.client.get(url), &what).await?;
        let id = id_of(&value).ok_or_else(|| format!("{what}: the answer holds no id"))?;
        Ok((id, self.registered(&value, &what).await?))
    }

    /// The columns of `subject`'s latest schema, as Arrow fields: what
    /// `CREATE TABLE ... LIKE 'subject'` declares. An Avro schema's record
    /// fields ([`crate::avro::avro_fields`]), or the fields of a `.proto`
    /// file's first message ([`crate::protobuf::message_fields`]).
    pub async fn subject_fields(&self, subject: &str) -> Result<Vec<Field>, String> {
        let (id, schema) = self.latest(subject).await?;
        let fields = match schema.schema_type.as_str() {
            "AVRO" => crate::avro::avro_fields(id, &schema),
            "PROTOBUF" => crate::protobuf::message_fields(&schema),
            other => Err(format!(
                "a {other} schema: LIKE reads Avro and Protobuf subjects"
            )),
        };
        fields.map_err(|e| format!("subject '{subject}': {e}"))
    }

    /// The subject written schemas go under ([`RegistryConfig::subject_for`]).
    pub fn subject(&self, topic: &str, is_key: bool) -> String {
        self.config.subject_for(topic, is_key)
    }
}

fn schema_text(value: &Value) -> Option<String> {
    value
        .get("schema")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn id_of(value: &Value) -> Option<u32> {
    value
        .get("id")
        .and_then(Value::as_u64)
        .and_then(|id| u32::try_from(id).ok())
}

/// A wire-format record's schema id and body.
pub(crate) fn frame(record: &[u8]) -> Result<(u32, &[u8]), String> {
    match record {
        [MAGIC, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => Err(
            "not in the schema registry's wire format (a zero byte, then a 4-byte schema id)"
                .into(),
        ),
    }
}
