//! A schema registry for the tests: the part of Confluent's REST API that
//! Weir calls (a schema by id, registering under a subject, a subject's
//! latest or numbered version, with schema types and references), on
//! loopback. No real registry installs from the
//! package registries this project reaches (Confluent's and Apicurio's are
//! Java servers, Karapace is not on PyPI), so this stands in; it keeps
//! Confluent's rules that matter here: ids are global, the same schema
//! gets the same id under any subject, versions count per subject.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One registered schema: its text, type (`None`: Avro) and references.
#[derive(Clone, PartialEq)]
struct Entry {
    text: String,
    schema_type: Option<String>,
    references: serde_json::Value,
}

impl Entry {
    /// The schema as the registry answers it, with `extra` fields.
    fn answer(&self, mut extra: serde_json::Value) -> String {
        extra["schema"] = self.text.clone().into();
        if let Some(t) = &self.schema_type {
            extra["schemaType"] = t.clone().into();
        }
        if self.references.as_array().is_some_and(|r| !r.is_empty()) {
            extra["references"] = self.references.clone();
        }
        extra.to_string()
    }
}

/// Schemas by id (index + 1), each with the subjects it is under.
#[derive(Default)]
struct Schemas {
    entries: Vec<Entry>,
    /// (subject, id), in the order registered.
    versions: Vec<(String, u32)>,
}

impl Schemas {
    fn register(&mut self, subject: &str, entry: Entry) -> u32 {
        let id = match self.entries.iter().position(|e| *e == entry) {
            Some(i) => i as u32 + 1,
            None => {
                self.entries.push(entry);
                self.entries.len() as u32
            }
        };
        if !self.versions.iter().any(|(s, i)| s == subject && *i == id) {
            self.versions.push((subject.to_string(), id));
        }
        id
    }
}

pub struct Registry {
    pub url: String,
    schemas: Arc<Mutex<Schemas>>,
}

impl Registry {
    pub fn start() -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let schemas = Arc::new(Mutex::new(Schemas::default()));
        let state = schemas.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Registry { url, schemas }
    }

    /// Registers Avro schema `text` under `subject` as a producer would;
    /// its id.
    pub fn register(&self, subject: &str, text: &str) -> u32 {
        self.register_with(subject, text, None, serde_json::json!([]))
    }

    /// Registers `text` of `schema_type` (`None`: Avro) with
    /// `references` (`[{"name", "subject", "version"}]`); its id.
    pub fn register_with(
        &self,
        subject: &str,
        text: &str,
        schema_type: Option<&str>,
        references: serde_json::Value,
    ) -> u32 {
        let entry = Entry {
            text: text.to_string(),
            schema_type: schema_type.map(str::to_string),
            references,
        };
        self.schemas.lock().unwrap().register(subject, entry)
    }

    /// The types of the schemas registered under `subject` (`AVRO` when
    /// the registering call left it out), oldest first.
    pub fn types(&self, subject: &str) -> Vec<String> {
        let schemas = self.schemas.lock().unwrap();
        schemas
            .versions
            .iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, id)| {
                let entry = &schemas.entries[*id as usize - 1];
                entry.schema_type.clone().unwrap_or_else(|| "AVRO".into())
            })
            .collect()
    }

    /// The schemas registered under `subject`, oldest first.
    pub fn versions(&self, subject: &str) -> Vec<String> {
        let schemas = self.schemas.lock().unwrap();
        schemas
            .versions
            .iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, id)| schemas.entries[*id as usize - 1].text.clone())
            .collect()
    }
}

/// Answers the requests of one connection.
fn serve(stream: TcpStream, state: &Mutex<Schemas>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, answer) = answer(method, path, &body, &mut state.lock().unwrap());
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(method: &str, path: &str, body: &[u8], schemas: &mut Schemas) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = |what: &str| {
        (
            "404 Not Found",
            serde_json::json!({"error_code": 40403, "message": format!("{what} not found")})
                .to_string(),
        )
    };
    match (method, segments.as_slice()) {
        ("GET", ["schemas", "ids", id]) => match id
            .parse::<usize>()
            .ok()
            .and_then(|i| schemas.entries.get(i.wrapping_sub(1)))
        {
            Some(entry) => ("200 OK", entry.answer(serde_json::json!({}))),
            None => not_found("Schema"),
        },
        ("POST", ["subjects", subject, "versions"]) => {
            let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            match request.get("schema").and_then(|s| s.as_str()) {
                Some(text) => {
                    let schema_type = request["schemaType"]
                        .as_str()
                        .filter(|t| *t != "AVRO")
                        .map(str::to_string);
                    let references = match &request["references"] {
                        serde_json::Value::Null => serde_json::json!([]),
                        listed => listed.clone(),
                    };
                    let entry = Entry {
                        text: text.to_string(),
                        schema_type,
                        references,
                    };
                    let id = schemas.register(subject, entry);
                    ("200 OK", serde_json::json!({ "id": id }).to_string())
                }
                None => (
                    "422 Unprocessable Entity",
                    r#"{"message":"no schema"}"#.into(),
                ),
            }
        }
        ("GET", ["subjects", subject, "versions", version]) => {
            let versions: Vec<u32> = schemas
                .versions
                .iter()
                .filter(|(s, _)| s == subject)
                .map(|(_, id)| *id)
                .collect();
            let number = match *version {
                "latest" => Some(versions.len()),
                n => n.parse::<usize>().ok(),
            };
            match number.filter(|n| *n >= 1).and_then(|n| versions.get(n - 1)) {
                Some(id) => (
                    "200 OK",
                    schemas.entries[*id as usize - 1].answer(serde_json::json!({
                        "subject": subject,
                        "version": number,
                        "id": id,
                    })),
                ),
                None => not_found("Version"),
            }
        }
        _ => not_found("Path"),
    }
}
