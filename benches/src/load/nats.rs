//! A `nats-server -js` for the tool's scale-out cases (`--via bus`, `catchup`): started on a
//! random loopback port with a temporary store, stopped and removed on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    pub url: String,
    store: PathBuf,
}

impl NatsServer {
    /// Starts `binary` (`nats-server` from Debian's package, 2.9 or later).
    pub fn start(binary: &str) -> anyhow::Result<NatsServer> {
        let store = std::env::temp_dir().join(format!("ticker-bench-nats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        std::fs::create_dir_all(&store)?;
        let mut child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("{binary} does not start ({e}): apt-get install nats-server")
            })?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("Listening for client connections on ") {
                    if !sent {
                        let addr = line[at..].rsplit(' ').next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| anyhow::anyhow!("{binary} did not listen within 20 s"))?;
        Ok(NatsServer {
            child,
            url: format!("nats://{addr}"),
            store,
        })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
