//! One tickerd process of the kill test: started on free loopback ports over the test's data
//! directory, its addresses read from the lines it prints, then killed with SIGKILL or stopped
//! with SIGTERM. A process the test drops (a failing assertion) is killed too.

use super::GUARD;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

pub struct Tickerd {
    process: Process,
    pub grpc: String,
    pub http: String,
    /// What recovery did, as tickerd's `journal:` start-up line says.
    pub recovery: String,
}

/// The running program and the tasks reading its output.
struct Process {
    child: Child,
    stdout: JoinHandle<()>,
    stderr: JoinHandle<Vec<String>>,
}

/// What tickerd prints before it serves: both addresses, then the journal line.
#[derive(Default)]
struct Banner {
    http: Option<String>,
    grpc: Option<String>,
}

fn spawn(
    args: &[String],
) -> (
    Child,
    JoinHandle<Vec<String>>,
    Lines<BufReader<ChildStdout>>,
) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tickerd"));
    // tickerd reads every TICKERD_* variable as configuration: the test's own settings
    // (TICKERD_KILL_*) and anything else set around it must not reach it.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TICKERD_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(args)
        // Warnings only: a torn tail cut at start is one, and worth seeing.
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tickerd starts");
    let stderr = tokio::spawn(forward(child.stderr.take().expect("piped stderr")));
    let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    (child, stderr, lines)
}

/// Reads on, so tickerd never writes into a closed pipe.
fn drain(mut lines: Lines<BufReader<ChildStdout>>) -> JoinHandle<()> {
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} })
}

/// Starts tickerd and kills it `after` that long, whatever it is doing then (recovering,
/// adding its instruments, cancelling dead sessions' orders, taking its first commands).
/// Returns what it wrote on stderr.
pub async fn start_and_kill(args: &[String], after: Duration) -> Vec<String> {
    let (child, stderr, lines) = spawn(args);
    let stdout = drain(lines);
    tokio::time::sleep(after).await;
    Process {
        child,
        stdout,
        stderr,
    }
    .kill()
    .await
}

/// Starts tickerd where it must refuse to serve, and waits for it to end: its exit status and
/// what it wrote on stderr. (Only the bus test has such a start; the kill test shares this
/// file.)
#[allow(dead_code)]
pub async fn run_to_failure(args: &[String]) -> (std::process::ExitStatus, Vec<String>) {
    let (mut child, stderr, lines) = spawn(args);
    let stdout = drain(lines);
    let status = tokio::time::timeout(GUARD, child.wait())
        .await
        .expect("tickerd ends in time")
        .expect("waiting for tickerd");
    let stderr = Process {
        child,
        stdout,
        stderr,
    }
    .output()
    .await;
    (status, stderr)
}

impl Tickerd {
    /// Starts tickerd and waits until it serves (it prints its addresses once it does).
    pub async fn start(args: &[String]) -> Tickerd {
        let (mut child, stderr, mut lines) = spawn(args);
        let mut banner = Banner::default();
        let recovery = tokio::time::timeout(GUARD, read_banner(&mut lines, &mut banner)).await;
        let recovery =
            match recovery {
                Ok(Some(line)) => line,
                failed => {
                    let _ = child.start_kill();
                    let stderr = tokio::time::timeout(GUARD, stderr).await;
                    panic!(
                    "tickerd did not print its addresses and journal line ({}); stderr: {stderr:?}",
                    if failed.is_err() { "timed out" } else { "it ended" }
                );
                }
            };
        Tickerd {
            process: Process {
                child,
                stdout: drain(lines),
                stderr,
            },
            http: banner
                .http
                .expect("the HTTP address comes before the journal line"),
            grpc: banner
                .grpc
                .expect("the gRPC address comes before the journal line"),
            recovery,
        }
    }

    /// The process id, for signals the test sends itself (SIGSTOP to freeze a matcher).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.process.child.id().expect("tickerd runs")
    }

    /// `kill -9`. Returns what tickerd wrote on stderr.
    pub async fn kill(self) -> Vec<String> {
        self.process.kill().await
    }

    /// SIGTERM, then waits for a clean exit (a final snapshot is written on the way out).
    /// Returns what tickerd wrote on stderr.
    pub async fn terminate(self) -> Vec<String> {
        let mut process = self.process;
        let pid = process.child.id().expect("tickerd runs").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM sent to {pid}");
        let status = tokio::time::timeout(GUARD, process.child.wait())
            .await
            .expect("tickerd stops in time on SIGTERM")
            .expect("waiting for tickerd");
        let stderr = process.output().await;
        assert!(
            status.success(),
            "tickerd exits cleanly on SIGTERM: {status:?}; stderr: {stderr:?}"
        );
        stderr
    }
}

impl Process {
    /// SIGKILL (what `kill -9` sends), then waits for the process to be gone, and its
    /// directory lock with it.
    async fn kill(mut self) -> Vec<String> {
        self.child.start_kill().expect("SIGKILL is sent");
        let status = tokio::time::timeout(GUARD, self.child.wait())
            .await
            .expect("a killed tickerd is gone in time")
            .expect("waiting for tickerd");
        let stderr = self.output().await;
        // Anything else means it ended by itself before the kill (a panic, a journal
        // failure, a refused start).
        assert_eq!(
            status.signal(),
            Some(9),
            "tickerd ended by the SIGKILL, not before it: {status:?}; stderr: {stderr:?}"
        );
        stderr
    }

    async fn output(self) -> Vec<String> {
        let _ = tokio::time::timeout(GUARD, self.stdout).await;
        tokio::time::timeout(GUARD, self.stderr)
            .await
            .expect("tickerd's stderr closes with it")
            .expect("the stderr reader")
    }
}

/// Reads stdout up to the journal line, noting the addresses on the way; `None` if tickerd
/// ended first.
async fn read_banner(
    lines: &mut Lines<BufReader<ChildStdout>>,
    banner: &mut Banner,
) -> Option<String> {
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(rest) = line.strip_prefix("trader page:  http://") {
            banner.http = Some(rest.trim_end_matches('/').to_string());
        } else if let Some(rest) = line.strip_prefix("gRPC:         http://") {
            banner.grpc = rest.split_whitespace().next().map(str::to_string);
        } else if let Some(rest) = line.strip_prefix("journal:") {
            return Some(rest.trim().to_string());
        }
    }
    None
}

/// Passes tickerd's stderr on to the test's output (shown when the test fails) and keeps it.
async fn forward(stderr: impl AsyncRead + Unpin) -> Vec<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut kept = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("    tickerd: {line}");
        kept.push(line);
    }
    kept
}

/// The data directory: created empty, removed at the end of a passing test and kept (and
/// named) after a failing one, for `tickerd journal verify | inspect | replay`.
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn new(seed: u64, shards: usize) -> DataDir {
        let dir = std::env::temp_dir().join(format!(
            "tickerd-kill-{}-{seed}-{shards}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the data directory");
        DataDir(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the data directory is kept for inspection: {}",
                self.0.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
