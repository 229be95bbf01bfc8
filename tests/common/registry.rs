//! A schema registry for the tests: the part of Confluent's REST API that
//! Weir calls (a schema by id, registering under a subject, a subject's
//! latest version), on loopback. No real registry installs from the
//! package registries this project reaches (Confluent's and Apicurio's are
//! Java servers, Karapace is not on PyPI), so this stands in; it keeps
//! Confluent's rules that matter here: ids are global, the same schema
//! gets the same id under any subject, versions count per subject.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Schemas by id (index + 1), each with the subjects it is under.
#[derive(Default)]
struct Schemas {
    texts: Vec<String>,
    /// (subject, id), in the order registered.
    versions: Vec<(String, u32)>,
}

impl Schemas {
    fn register(&mut self, subject: &str, text: &str) -> u32 {
        let id = match self.texts.iter().position(|t| t == text) {
            Some(i) => i as u32 + 1,
            None => {
                self.texts.push(text.to_string());
                self.texts.len() as u32
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

    /// Registers `text` under `subject` as a producer would; its id.
    pub fn register(&self, subject: &str, text: &str) -> u32 {
        self.schemas.lock().unwrap().register(subject, text)
    }

    /// The schemas registered under `subject`, oldest first.
    pub fn versions(&self, subject: &str) -> Vec<String> {
        let schemas = self.schemas.lock().unwrap();
        schemas
            .versions
            .iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, id)| schemas.texts[*id as usize - 1].clone())
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
            .and_then(|i| schemas.texts.get(i.wrapping_sub(1)))
        {
            Some(text) => ("200 OK", serde_json::json!({ "schema": text }).to_string()),
            None => not_found("Schema"),
        },
        ("POST", ["subjects", subject, "versions"]) => {
            let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            match request.get("schema").and_then(|s| s.as_str()) {
                Some(text) => {
                    let id = schemas.register(subject, text);
                    ("200 OK", serde_json::json!({ "id": id }).to_string())
                }
                None => (
                    "422 Unprocessable Entity",
                    r#"{"message":"no schema"}"#.into(),
                ),
            }
        }
        ("GET", ["subjects", subject, "versions", "latest"]) => {
            let versions: Vec<u32> = schemas
                .versions
                .iter()
                .filter(|(s, _)| s == subject)
                .map(|(_, id)| *id)
                .collect();
            match versions.last() {
                Some(id) => (
                    "200 OK",
                    serde_json::json!({
                        "subject": subject,
                        "version": versions.len(),
                        "id": id,
                        "schema": schemas.texts[*id as usize - 1],
                    })
                    .to_string(),
                ),
                None => not_found("Subject"),
            }
        }
        _ => not_found("Path"),
    }
}
