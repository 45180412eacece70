//! Reads tickerd's `/metrics` (Prometheus text format) into totals per metric name: the soak
//! wants the alive-task gauge and the slow-consumer counters summed over their labels.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the soak prints from `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// `tickerd_runtime_alive_tasks`.
    pub alive_tasks: u64,
    /// `tickerd_slow_conflations_total`, all channels.
    pub conflations: u64,
    /// `tickerd_slow_resyncs_total`, all channels.
    pub resyncs: u64,
    /// `tickerd_slow_disconnects_total`, all channels (WebSocket 1013, gRPC RESOURCE_EXHAUSTED).
    pub too_slow: u64,
    /// `tickerd_resumes_total`, all channels.
    pub resumes: u64,
    /// `tickerd_resumes_too_old_total`, all channels.
    pub resumes_too_old: u64,
    /// `tickerd_ws_connections`.
    pub ws_connections: u64,
}

/// Fetches and reads `/metrics`.
pub async fn scrape(http: SocketAddr) -> anyhow::Result<ServerCounters> {
    let mut tcp = TcpStream::connect(http).await?;
    tcp.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("/metrics: no HTTP header end"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "/metrics answered {:?}",
        head.lines().next().unwrap_or("")
    );
    counters(&totals(body))
}

/// Every sample's value summed per metric name (labels dropped). Values that are not whole
/// numbers (histogram sums in seconds) are left out.
pub fn totals(exposition: &str) -> BTreeMap<&str, u64> {
    let mut out = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(v) = value.parse::<u64>() {
            *out.entry(name).or_default() += v;
        }
    }
    out
}

fn counters(totals: &BTreeMap<&str, u64>) -> anyhow::Result<ServerCounters> {
    let get = |name: &str| {
        totals
            .get(name)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("/metrics has no {name}"))
    };
    Ok(ServerCounters {
        alive_tasks: get("tickerd_runtime_alive_tasks")?,
        conflations: get("tickerd_slow_conflations_total")?,
        resyncs: get("tickerd_slow_resyncs_total")?,
        too_slow: get("tickerd_slow_disconnects_total")?,
        resumes: get("tickerd_resumes_total")?,
        resumes_too_old: get("tickerd_resumes_too_old_total")?,
        ws_connections: get("tickerd_ws_connections")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# HELP tickerd_slow_conflations_total Times a slow subscriber was conflated.
# TYPE tickerd_slow_conflations_total counter
tickerd_slow_conflations_total{channel=\"ticker\"} 7
tickerd_slow_conflations_total{channel=\"candles\"} 2
tickerd_slow_resyncs_total{channel=\"depth\"} 3
tickerd_slow_disconnects_total{channel=\"trades\"} 1
tickerd_resumes_total{channel=\"trades\"} 40
tickerd_resumes_too_old_total{channel=\"trades\"} 0
tickerd_engine_to_feeds_seconds_sum 0.25
tickerd_ws_connections 12
tickerd_runtime_alive_tasks 57
";

    #[test]
    fn samples_are_summed_over_labels_and_fractions_skipped() {
        let t = totals(EXPOSITION);
        assert_eq!(t["tickerd_slow_conflations_total"], 9);
        assert!(!t.contains_key("tickerd_engine_to_feeds_seconds_sum"));
        assert_eq!(
            counters(&t).unwrap(),
            ServerCounters {
                alive_tasks: 57,
                conflations: 9,
                resyncs: 3,
                too_slow: 1,
                resumes: 40,
                resumes_too_old: 0,
                ws_connections: 12,
            }
        );
    }

    #[test]
    fn a_missing_metric_is_an_error_naming_it() {
        let t = totals("tickerd_ws_connections 1\n");
        let err = counters(&t).unwrap_err().to_string();
        assert!(err.contains("tickerd_runtime_alive_tasks"), "{err}");
    }
}
