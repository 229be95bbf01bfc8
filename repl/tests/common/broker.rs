//! A Kafka broker for the tests: Tansu, an Apache Kafka compatible broker
//! (`cargo install tansu`, which `.ci/run` does), in memory on loopback,
//! and `weir run` against it.
#![allow(dead_code)] // each test file uses some of these

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `tansu` binary: on `PATH`, or where `.ci/run` installs it.
pub fn tansu() -> PathBuf {
    let installed = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/weir-tools/bin/tansu"))
        .filter(|p| p.exists());
    installed.unwrap_or_else(|| PathBuf::from("tansu"))
}

pub struct Broker {
    child: Child,
    pub address: String,
    storage: Storage,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the broker keeps its topics.
#[derive(Clone)]
pub enum Storage {
    /// In memory: gone when the broker stops.
    Memory,
    /// In a SQLite file in this directory (Tansu's `libsql` engine), so a
    /// restarted broker has its topics back.
    Sqlite(PathBuf),
}

impl Broker {
    /// Kills the broker (SIGKILL, no goodbye to anybody), waits `down`,
    /// and starts it again on the same address and storage.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = spawn_tansu(&self.address, &self.storage);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_tansu(address: &str, storage: &Storage) -> Child {
    let url = format!("tcp://{address}");
    let mut command = Command::new(tansu());
    command
        .arg("broker")
        .args(["--listener-url", &url, "--advertised-listener-url", &url]);
    match storage {
        Storage::Memory => {
            command.args(["--storage-engine", "memory://tansu/"]);
        }
        Storage::Sqlite(dir) => {
            // Tansu opens the path relative to its working directory.
            command
                .args(["--storage-engine", "sqlite://tansu.db"])
                .current_dir(dir);
        }
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "`tansu` is not installed: `cargo install tansu --features dynostore` (.ci/run does)",
        )
}

/// Starts a broker in memory and creates `topics` (name, partitions) on it.
pub fn start_broker(topics: &[(&str, u32)]) -> Broker {
    start_broker_on(topics, Storage::Memory)
}

/// Starts a broker keeping its topics in `storage` and creates `topics`.
pub fn start_broker_on(topics: &[(&str, u32)], storage: Storage) -> Broker {
    let address = format!("127.0.0.1:{}", free_port());
    let url = format!("tcp://{address}");
    let child = spawn_tansu(&address, &storage);
    let broker = Broker {
        child,
        address,
        storage,
    };
    let started = Instant::now();
    for (topic, partitions) in topics {
        loop {
            let created = Command::new(tansu())
                .args(["topic", "create", "--broker", &url])
                .args(["--partitions", &partitions.to_string(), topic])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if created {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the broker did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    broker
}

pub fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

/// Runs `sql` with `weir run -e` and returns its CSV rows, sorted; fails
/// if it takes more than two minutes.
pub fn run(sql: &str) -> Vec<String> {
    let child = weir()
        .args(["run", "--format", "csv", "-e", sql])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let guard = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let output = child.wait_with_output().unwrap();
    let _ = done.send(());
    let _ = guard.join();
    super::csv_rows(output)
}
