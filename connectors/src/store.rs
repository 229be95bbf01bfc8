//! Every file path goes through `object_store`: a local path or a URL
//! (`file://`, `s3://`, ...) becomes a store and a path inside it.

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
use url::Url;

use crate::options::Options;
use crate::registry::ConnectorError;

/// A resolved location: the store and the prefix within it.
#[derive(Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The location as the user wrote it, for messages.
    pub display: String,
    /// Known to be an existing folder (a local directory). An object-store
    /// prefix is not known to exist until something is listed under it.
    pub directory: bool,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.display)
    }
}

/// Resolves `path`: a URL with a scheme, or a local path (relative paths are
/// relative to the current directory; a missing local directory is created
/// when `create` is set). S3 settings come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`, ...) and from `s3.*` options.
pub fn resolve(path: &str, options: &Options, create: bool) -> Result<Location, ConnectorError> {
    let display = path.to_string();
    let bad = |e: &dyn std::fmt::Display| ConnectorError::new(format!("path '{display}': {e}"));
    if let Some((scheme, _)) = path.split_once("://") {
        let url = Url::parse(path).map_err(|e| bad(&e))?;
        match scheme {
            "file" => {
                let local = url
                    .to_file_path()
                    .map_err(|_| bad(&"not a local file path"))?;
                return local_location(&local, create, display);
            }
            "s3" | "s3a" => {
                let bucket = url.host_str().ok_or_else(|| bad(&"has no bucket"))?;
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in options.iter() {
                    if let Some(setting) = key.strip_prefix("s3.") {
                        let config = setting
                            .parse()
                            .map_err(|e| ConnectorError::option(key, e))?;
                        builder = builder.with_config(config, value);
                    }
                }
                // A sink's transient errors (a 5xx, a refused connection)
                // are retried with object_store's backoff; the option
                // bounds how often before the error reaches the job.
                if let Some(retries) = options.parse::<usize>("sink.max-retries")? {
                    builder = builder.with_retry(object_store::RetryConfig {
                        max_retries: retries,
                        ..Default::default()
                    });
                }
                if std::env::var("AWS_ENDPOINT").is_ok_and(|e| e.starts_with("http://")) {
                    builder = builder.with_allow_http(true);
                }
                let store = builder.build().map_err(|e| bad(&e))?;
                let prefix = Path::from(url.path().trim_start_matches('/'));
                return Ok(Location {
                    store: Arc::new(store),
                    prefix,
                    display,
                    directory: false,
                });
            }
            other => {
                return Err(bad(&format!(
                    "scheme '{other}' is not supported (use a local path, file:// or s3://)"
                )))
            }
        }
    }
    local_location(std::path::Path::new(path), create, display)
}

fn local_location(
    path: &std::path::Path,
    create: bool,
    display: String,
) -> Result<Location, ConnectorError> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| ConnectorError::new(e.to_string()))?
            .join(path)
    };
    if create && !absolute.exists() {
        std::fs::create_dir_all(&absolute)
            .map_err(|e| ConnectorError::new(format!("cannot create '{display}': {e}")))?;
    }
    // A single file: the store is its directory, the prefix its name.
    if absolute.is_file() {
        let dir = absolute.parent().unwrap_or(std::path::Path::new("/"));
        let name = absolute
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| ConnectorError::new(format!("'{display}': {e}")))?;
        return Ok(Location {
            store: Arc::new(store),
            prefix: Path::from(name),
            display,
            directory: false,
        });
    }
    if !absolute.exists() {
        return Err(ConnectorError::new(format!(
            "path '{display}' does not exist"
        )));
    }
    let store = LocalFileSystem::new_with_prefix(&absolute)
        .map_err(|e| ConnectorError::new(format!("'{display}': {e}")))?;
    Ok(Location {
        store: Arc::new(store),
        prefix: Path::from(""),
        display,
        directory: true,
    })
}
