//! The tickerd under test: the release binary started as a real child process on ports the OS
//! chooses, with its data directory and log in a temporary directory of its own, sampled from
//! `/proc` (resident memory, open file descriptors, threads, CPU time) and stopped with SIGTERM.
//!
//! Dropping a [`Tickerd`] that was not stopped (the soak failed or panicked) kills the process
//! and removes the directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `/proc/PID/stat` counts CPU time in clock ticks of `USER_HZ`, which Linux fixes at 100 for
/// everything it reports to user space, whatever the kernel's own tick rate.
const USER_HZ: u64 = 100;

/// How tickerd is started.
#[derive(Debug, Clone)]
pub struct Launch {
    pub binary: PathBuf,
    /// `--token TOKEN=ACCOUNT` arguments.
    pub tokens: Vec<(String, u64)>,
}

/// A running tickerd.
pub struct Tickerd {
    child: Child,
    pub pid: u32,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Holds `data/` (the journal) and `tickerd.log` (its stderr).
    dir: PathBuf,
}

/// One look at the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    pub rss_bytes: u64,
    pub fds: u64,
    pub threads: u64,
    /// User + system CPU time so far, in nanoseconds.
    pub cpu_ns: u64,
}

impl Tickerd {
    /// Starts `launch.binary` and waits for the addresses it prints.
    pub async fn start(launch: &Launch) -> anyhow::Result<Tickerd> {
        let dir = std::env::temp_dir().join(format!(
            "ticker-soak-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        ));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("tickerd.log"))?;
        let mut command = Command::new(&launch.binary);
        command
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.join("data"));
        for (token, account) in &launch.tokens {
            command.arg("--token").arg(format!("{token}={account}"));
        }
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", launch.binary.display()))?;
        let pid = child.id().unwrap_or(0);
        let stdout = child.stdout.take().expect("stdout is piped");
        // From here on, dropping the guard kills the child and removes the directory.
        let mut started = Tickerd {
            child,
            pid,
            grpc: SocketAddr::from(([0, 0, 0, 0], 0)),
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            dir,
        };
        let mut lines = BufReader::new(stdout).lines();
        let (mut grpc, mut http) = (None, None);
        while grpc.is_none() || http.is_none() {
            let Some(line) = lines.next_line().await? else {
                anyhow::bail!(
                    "tickerd ended before printing its addresses; its log:\n{}",
                    started.log_tail(20)
                );
            };
            if let Some(rest) = line.strip_prefix("trader page:  http://") {
                http = Some(rest.trim_end_matches('/').parse()?);
            }
            if let Some(rest) = line.strip_prefix("gRPC:         http://") {
                grpc = rest.split_whitespace().next().map(str::parse).transpose()?;
            }
        }
        // Nothing more is expected on stdout, but a full pipe would block tickerd: drain it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        started.grpc = grpc.expect("read above");
        started.http = http.expect("read above");
        Ok(started)
    }

    /// Reads `/proc/PID/status`, `/proc/PID/stat` and `/proc/PID/fd`.
    pub fn sample(&self) -> anyhow::Result<ProcessSample> {
        let proc = PathBuf::from(format!("/proc/{}", self.pid));
        let status = std::fs::read_to_string(proc.join("status"))?;
        let stat = std::fs::read_to_string(proc.join("stat"))?;
        let fds = std::fs::read_dir(proc.join("fd"))?.count() as u64;
        let (rss_bytes, threads) = parse_status(&status)?;
        Ok(ProcessSample {
            rss_bytes,
            fds,
            threads,
            cpu_ns: parse_stat_cpu_ns(&stat)?,
        })
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// The last `n` lines tickerd wrote to stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("tickerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends SIGTERM and waits up to `grace` for the exit; kills it after that.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {} failed", self.pid);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                anyhow::bail!(
                    "tickerd did not exit within {grace:?} of SIGTERM (killed); its log:\n{}",
                    self.log_tail(20)
                )
            }
        }
    }
}

impl Drop for Tickerd {
    fn drop(&mut self) {
        // A no-op after a clean stop; otherwise the soak failed and tickerd must not outlive it.
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `VmRSS` (bytes) and `Threads` of `/proc/PID/status`.
fn parse_status(status: &str) -> anyhow::Result<(u64, u64)> {
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/PID/status"))?;
        let number = line.split_whitespace().next().unwrap_or("");
        number
            .parse()
            .map_err(|e| anyhow::anyhow!("{name} {number:?}: {e}"))
    };
    Ok((field("VmRSS:")? * 1024, field("Threads:")?))
}

/// utime + stime of `/proc/PID/stat`, in nanoseconds. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after its closing parenthesis.
fn parse_stat_cpu_ns(stat: &str) -> anyhow::Result<u64> {
    let after = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("/proc/PID/stat without a command name"))?
        .1;
    // After the name: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        let f = fields
            .get(i - 3)
            .ok_or_else(|| anyhow::anyhow!("/proc/PID/stat has no field {i}"))?;
        Ok(f.parse()?)
    };
    Ok((ticks(14)? + ticks(15)?) * (1_000_000_000 / USER_HZ))
}

/// The tickerd next to this executable (both are built into the same `target/<profile>/`).
pub fn default_binary() -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe()?.with_file_name("tickerd");
    anyhow::ensure!(
        beside.exists(),
        "no tickerd beside {} (build it with `cargo build --release -p ticker-servers`, or pass --tickerd PATH)",
        std::env::current_exe()?.display()
    );
    Ok(beside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_resident_bytes_and_threads() {
        let status = "Name:\ttickerd\nVmPeak:\t  300000 kB\nVmRSS:\t   97504 kB\nThreads:\t8\n";
        assert_eq!(parse_status(status).unwrap(), (97_504 * 1024, 8));
        assert!(parse_status("Name:\ttickerd\n").is_err());
    }

    #[test]
    fn stat_cpu_is_user_plus_system_time_even_with_spaces_in_the_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime ...
        let stat = "4242 (tick erd) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 8 0";
        assert_eq!(parse_stat_cpu_ns(stat).unwrap(), 300 * 10_000_000);
        assert!(parse_stat_cpu_ns("4242 tickerd S").is_err());
    }
}
