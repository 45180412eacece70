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

/// What one hop through this NATS server costs at `rate` messages/s, measured in the same run
/// as `--via bus` so the bus's figures can be read against it: a message published to a
/// stream of its own and read by an ordered push consumer (the gateway's way), and the same
/// message published and read by a plain subscription (no JetStream), each one way from the
/// publish call to its arrival, `messages` of each, paced like the order flow.
pub async fn one_hop(url: &str, rate: u64, messages: u64) -> anyhow::Result<serde_json::Value> {
    use async_nats::jetstream::{self, consumer, stream};
    use futures_util::StreamExt;
    let publisher = async_nats::connect(url).await?;
    let reader = async_nats::connect(url).await?;
    let js = jetstream::new(publisher.clone());
    let subject = "ticker-bench.hop";
    js.get_or_create_stream(stream::Config {
        name: "TICKER_BENCH_HOP".into(),
        subjects: vec![subject.into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let mut consumed = jetstream::new(reader.clone())
        .get_stream("TICKER_BENCH_HOP")
        .await?
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: reader.new_inbox(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    let mut plain = reader.subscribe("ticker-bench.hop-plain").await?;
    reader.flush().await?;
    let payload = bytes::Bytes::from(vec![0u8; 200]);
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut stored = super::latency::histogram();
    let mut core = super::latency::histogram();
    let start = tokio::time::Instant::now();
    for i in 0..2 * messages {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let sent = Instant::now();
        if i % 2 == 0 {
            let ack = js.publish(subject, payload.clone()).await?;
            consumed
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("the hop consumer ended"))??;
            stored.saturating_record(sent.elapsed().as_nanos() as u64);
            ack.await?;
        } else {
            publisher
                .publish("ticker-bench.hop-plain", payload.clone())
                .await?;
            plain
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("the hop subscription ended"))?;
            core.saturating_record(sent.elapsed().as_nanos() as u64);
        }
    }
    js.delete_stream("TICKER_BENCH_HOP").await?;
    Ok(serde_json::json!({
        "jetstream_publish_to_push_consumer": super::latency::summary(&stored),
        "core_publish_to_subscriber": super::latency::summary(&core),
        "rate": rate,
    }))
}
