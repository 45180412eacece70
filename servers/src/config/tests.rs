use super::*;
use crate::auth::{Principal, Role};
use crate::ws::deflate::{DeflateConfig, DeflateMode};
use crate::ws::WsLimits;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn no_layers_give_the_embedded_defaults() {
    assert_eq!(Layers::new().finish().unwrap(), TickerdConfig::default());
    let d = TickerdConfig::default();
    assert_eq!(d.grpc.listen.to_string(), "127.0.0.1:50051");
    assert_eq!(d.http.listen.to_string(), "127.0.0.1:8080");
    assert!(d.market.simulator);
}

#[test]
fn the_shipped_example_parses_to_the_defaults() {
    let text = include_str!("../../../tickerd.example.toml");
    let mut layers = Layers::new();
    layers.file("tickerd.example.toml", text).unwrap();
    let mut expected = TickerdConfig::default();
    // The example shows how tokens look; everything else is the default.
    let t = &mut expected.auth.tokens;
    t.insert("alice-token".into(), TokenGrant::Trader(1));
    t.insert("bob-token".into(), TokenGrant::Trader(2));
    t.insert(
        "risk-desk-token".into(),
        TokenGrant::Role {
            role: "risk".into(),
            account: None,
        },
    );
    t.insert(
        "ops-token".into(),
        TokenGrant::Role {
            role: "admin".into(),
            account: None,
        },
    );
    assert_eq!(layers.finish().unwrap(), expected);
}

#[test]
fn later_layers_override_earlier_ones() {
    let mut layers = Layers::new();
    layers
        .file("f.toml", "[grpc]\nlisten = \"0.0.0.0:1\"\ngzip = false\n")
        .unwrap()
        .env(env(&[
            ("TICKERD_GRPC_LISTEN", "0.0.0.0:2"),
            ("HOME", "/root"),
        ]))
        .unwrap()
        .set("grpc.listen", "0.0.0.0:3", "--grpc-listen")
        .unwrap();
    let c = layers.finish().unwrap();
    assert_eq!(c.grpc.listen.to_string(), "0.0.0.0:3");
    assert!(
        !c.grpc.gzip,
        "a key only the file set keeps the file's value"
    );
}

#[test]
fn environment_values_are_typed_by_their_text() {
    let mut layers = Layers::new();
    layers
        .env(env(&[
            ("TICKERD_MARKET_SIMULATOR", "false"),
            ("TICKERD_MARKET_SIM_SEED", "7"),
            ("TICKERD_AUTH_TOKENS", "{ \"desk-1\" = 12 }"),
            ("TICKERD_CONFIG", "ignored-here.toml"),
        ]))
        .unwrap();
    let c = layers.finish().unwrap();
    assert!(!c.market.simulator);
    assert_eq!(c.market.sim_seed, 7);
    assert_eq!(c.auth.tokens.get("desk-1"), Some(&TokenGrant::Trader(12)));
    assert!(c.market_config().simulator.is_none());
}

#[test]
fn a_bad_value_names_the_key_and_the_layer_it_came_from() {
    let mut layers = Layers::new();
    layers
        .env(env(&[("TICKERD_GRPC_LISTEN", "localhost-ish")]))
        .unwrap();
    let e = layers.finish().unwrap_err().to_string();
    assert!(
        e.starts_with("grpc.listen (from TICKERD_GRPC_LISTEN): "),
        "{e}"
    );

    let mut layers = Layers::new();
    layers
        .file("site.toml", "[market]\nsim_rate = \"fast\"\n")
        .unwrap();
    let e = layers.finish().unwrap_err().to_string();
    assert!(
        e.starts_with("market.sim_rate (from site.toml): invalid type"),
        "{e}"
    );
}

#[test]
fn unknown_keys_and_sections_are_refused_by_name() {
    let mut layers = Layers::new();
    layers.file("site.toml", "[grpc]\nlisen = \"x\"\n").unwrap();
    let e = layers.finish().unwrap_err().to_string();
    assert!(
        e.contains("grpc.lisen") && e.contains("unknown field"),
        "{e}"
    );

    let e = Layers::new()
        .env(env(&[("TICKERD_GPRC_LISTEN", "x")]))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("TICKERD_GPRC_LISTEN") && e.contains("gprc_listen"),
        "{e}"
    );

    let e = Layers::new()
        .set("nosuch.key", "1", "--set")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no config key nosuch.key"), "{e}");
}

#[test]
fn syntax_errors_name_the_file() {
    let e = Layers::new()
        .file("site.toml", "[grpc\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("site.toml: "), "{e}");
}

#[test]
fn rules_beyond_types_are_checked() {
    let cases = [
        ("market.ingress_capacity", "0", "must be > 0"),
        ("grpc.tls_cert", "\"cert.pem\"", "set together"),
        ("market.heartbeat_ms", "0", "must be > 0"),
        ("http.listen", "127.0.0.1:50051", "also grpc.listen"),
        ("http.deflate", "\"fast\"", "not one of"),
        ("http.deflate_max_window_bits", "8", "9..=15"),
        ("http.max_subscriptions", "0", "must be > 0"),
        ("auth.jwt_hs256_secret", "\"short\"", "at least 32"),
        (
            "grpc.cors_origins",
            "[\"desk.example.com\"]",
            "is not an origin",
        ),
        (
            "grpc.cors_origins",
            "[\"https://desk.example.com/app\"]",
            "no path",
        ),
        ("grpc.max_header_bytes", "100", "1 KiB minimum"),
        ("market.shards", "0", "not in 1..=64"),
        ("market.shards", "65", "not in 1..=64"),
    ];
    for (key, value, expect) in cases {
        let mut layers = Layers::new();
        layers.set(key, value, "--set").unwrap();
        let e = layers.finish().unwrap_err().to_string();
        assert!(e.starts_with(&format!("{key} (from --set): ")), "{e}");
        assert!(e.contains(expect), "{e}");
    }
}

#[test]
fn shards_run_with_or_without_the_journal_and_on_a_matcher() {
    for journal in ["true", "false"] {
        let mut layers = Layers::new();
        layers.set("market.shards", "4", "--set").unwrap();
        layers.set("journal.enabled", journal, "--set").unwrap();
        let c = layers.finish().unwrap();
        assert_eq!(c.market_config().shards, 4);
        assert_eq!(c.market_config().journal.is_some(), journal == "true");
    }
    let mut layers = Layers::new();
    layers.set("market.shards", "2", "--set").unwrap();
    layers.set("bus.role", "\"matcher\"", "--set").unwrap();
    assert_eq!(layers.finish().unwrap().market_config().shards, 2);
}

#[test]
fn tokens_from_flags_join_the_file_and_refuse_account_zero() {
    let mut layers = Layers::new();
    layers
        .file("f.toml", "[auth]\ntokens = { a = 1 }\n")
        .unwrap()
        .token("b=2", "--token")
        .unwrap();
    let c = layers.finish().unwrap();
    assert_eq!(c.auth.tokens.len(), 2);
    assert_eq!(c.auth_config().tokens.get("b"), Some(&Principal::trader(2)));

    let e = Layers::new()
        .token("z=0", "--token")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("account 0") && e.contains("--token"), "{e}");
    assert!(Layers::new().token("nope", "--token").is_err());
}

#[test]
fn roles_come_from_tables_and_flags_and_unknown_ones_stop_the_start() {
    let mut layers = Layers::new();
    layers
        .file(
            "f.toml",
            "[auth]\ntokens = { t = 1, desk = { role = \"risk\" }, ops = { role = \"admin\", account = 9 } }\n",
        )
        .unwrap()
        .token("flag-risk=risk", "--token")
        .unwrap()
        .token("flag-admin=admin:4", "--token")
        .unwrap();
    let tokens = layers.finish().unwrap().auth_config().tokens;
    let p = |role, account| Principal { role, account };
    assert_eq!(tokens["t"], Principal::trader(1));
    assert_eq!(tokens["desk"], p(Role::Risk, None));
    assert_eq!(tokens["ops"], p(Role::Admin, Some(9)));
    assert_eq!(tokens["flag-risk"], p(Role::Risk, None));
    assert_eq!(tokens["flag-admin"], p(Role::Admin, Some(4)));

    let mut layers = Layers::new();
    layers
        .file("f.toml", "[auth]\ntokens = { x = { role = \"root\" } }\n")
        .unwrap();
    let e = layers.finish().unwrap_err().to_string();
    assert!(e.starts_with("auth.tokens (from f.toml)"), "{e}");
    assert!(e.contains("unknown role \"root\""), "{e}");
    let e = Layers::new()
        .token("x=trader", "--token")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("a trader needs an account"), "{e}");
    let e = Layers::new()
        .token("x=root:3", "--token")
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("auth.tokens (from --token)"), "{e}");
}

#[test]
fn risk_limits_reach_the_market_config_and_bad_accounts_are_refused() {
    let mut layers = Layers::new();
    layers
        .file(
            "f.toml",
            "[risk.default_limits]\nmax_open_orders = 100\n\n[risk.accounts.7]\nmax_orders_per_sec = 5\n\n[risk.accounts.7.instruments.BTC-USD]\nmax_long = \"2\"\n",
        )
        .unwrap();
    let m = layers.finish().unwrap().market_config();
    assert_eq!(m.risk.default.unwrap().max_open_orders, Some(100));
    let seven = &m.risk.accounts[&7];
    assert_eq!(seven.max_orders_per_sec, Some(5));
    assert_eq!(seven.instruments["BTC-USD"].max_long.as_deref(), Some("2"));
    for bad in ["0", "desk"] {
        let mut layers = Layers::new();
        layers
            .file(
                "f.toml",
                &format!("[risk.accounts.{bad}]\nmax_open_orders = 1\n"),
            )
            .unwrap();
        let e = layers.finish().unwrap_err().to_string();
        assert!(e.starts_with("risk.accounts (from f.toml)"), "{e}");
    }
}

#[test]
fn the_printed_config_reads_back_the_same() {
    let mut c = TickerdConfig::default();
    c.grpc.tls_cert = Some("c.pem".into());
    c.grpc.tls_key = Some("k.pem".into());
    c.auth.tokens.insert("t".into(), TokenGrant::Trader(5));
    c.auth.tokens.insert(
        "r".into(),
        TokenGrant::Role {
            role: "risk".into(),
            account: Some(6),
        },
    );
    let mut layers = Layers::new();
    layers.file("printed", &c.to_toml()).unwrap();
    assert_eq!(layers.finish().unwrap(), c);
}

#[test]
fn http_settings_reach_the_websocket_config() {
    let mut layers = Layers::new();
    layers
        .set("http.deflate", "per-connection", "--set")
        .unwrap()
        .set("http.max_message_bytes", "4096", "--set")
        .unwrap()
        .token("t=3", "--token")
        .unwrap();
    let w = layers.finish().unwrap().ws_config();
    assert_eq!(w.deflate.mode, DeflateMode::PerConnection);
    assert!(w.deflate.enabled);
    assert_eq!(w.deflate.max_inflated_message, 4096);
    assert_eq!(w.limits.max_message_size, 4096);
    assert_eq!(w.auth.tokens.get("t"), Some(&Principal::trader(3)));
    let mut layers = Layers::new();
    layers.set("http.deflate", "off", "--set").unwrap();
    assert!(!layers.finish().unwrap().ws_config().deflate.enabled);
    // The defaults map back to the front's own defaults.
    let d = TickerdConfig::default().ws_config();
    assert_eq!(d.limits, WsLimits::default());
    assert_eq!(d.deflate, DeflateConfig::default());
}

#[test]
fn grpc_settings_reach_the_grpc_config() {
    let mut layers = Layers::new();
    layers
        .set("grpc.keepalive_interval_ms", "0", "--set")
        .unwrap()
        .set("grpc.max_message_bytes", "65536", "--set")
        .unwrap();
    let g = layers.finish().unwrap().grpc_config();
    assert_eq!(g.keepalive_interval, None);
    assert_eq!(g.max_message_size, 65536);
}
