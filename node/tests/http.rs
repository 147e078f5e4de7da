//! The HTTP/JSON API against a real 3-node cluster over real HTTP: what
//! it writes the binary protocol reads and the reverse, per-item results,
//! op ids counted once, typed errors that change nothing, and the probes.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use tally_client::{new_op_id, Consistency};

/// A request over HTTP from a blocking thread; the status and the JSON.
async fn call(addr: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (addr, method, path) = (addr.to_owned(), method.to_owned(), path.to_owned());
    let body = body.map(|b| b.to_string().into_bytes());
    let answer = tokio::task::spawn_blocking(move || http(&addr, &method, &path, body.as_deref()))
        .await
        .unwrap()
        .unwrap();
    let value = serde_json::from_str(&answer.body).unwrap_or_else(|e| {
        panic!(
            "{} {}: not JSON ({e}): {}",
            answer.status,
            path_of(&answer.body),
            answer.body
        )
    });
    (answer.status, value)
}

fn path_of(body: &str) -> &str {
    &body[..body.len().min(80)]
}

async fn total_over_http(addr: &str, key: &str) -> i64 {
    let (status, v) = call(addr, "GET", &format!("/v1/counters/events/{key}"), None).await;
    assert_eq!(status, 200, "{v}");
    v["sum"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_the_binary_protocol_see_the_same_counters() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let (h0, h1) = (cluster.http_addr(0), cluster.http_addr(1));
    let client = cluster.client(Consistency::Quorum).await;

    // HTTP writes, the binary protocol reads; a key with a slash travels
    // percent-encoded.
    let (status, v) = call(
        &h0,
        "POST",
        "/v1/increments",
        Some(json!({"increments": [
            {"key": "video:1/view"},
            {"key": "video:1/view", "delta": 4, "timestamp": "-5m"},
            {"key": "video:2/view", "delta": 2, "timestamp_ms": now_ms()},
        ]})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], 3);
    assert_eq!(
        client.total("events", b"video:1/view").await.unwrap().sum,
        5
    );
    assert_eq!(
        client.total("events", b"video:2/view").await.unwrap().sum,
        2
    );

    // The binary protocol writes, HTTP reads (through another node).
    let outcomes = client.increment(vec![inc("video:3", 7)]).await;
    assert!(outcomes.iter().all(|o| o.is_ok()));
    assert_eq!(total_over_http(&h1, "video:3").await, 7);
    assert_eq!(total_over_http(&h1, "video:1%2Fview").await, 5);

    // Range and stats.
    let (status, v) = call(
        &h1,
        "GET",
        "/v1/counters/events/video:1%2Fview/range?resolution=minute&from=-1h&to=now",
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let points = v["points"].as_array().unwrap();
    assert_eq!(
        points
            .iter()
            .map(|p| p["sum"].as_i64().unwrap())
            .sum::<i64>(),
        5
    );
    assert!(points[0]["bucket_start"].as_str().unwrap().ends_with('Z'));
    let (status, v) = call(
        &h1,
        "GET",
        "/v1/counters/events/video:1%2Fview/stats?from=-1d",
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["sum"].as_i64(), v["count"].as_i64()), (Some(5), Some(2)));

    // One bad item fails alone.
    let (status, v) = call(
        &h0,
        "POST",
        "/v1/increments",
        Some(json!({"increments": [
            {"key": "video:4"},
            {"key": "video:4", "namespace": "nope"},
            {"key": "x".repeat(5000)},
        ]})),
    )
    .await;
    assert_eq!(status, 207, "{v}");
    assert_eq!(v["results"][0]["status"], "ok");
    assert_eq!(v["results"][1]["status"], "failed");
    assert_eq!(v["results"][1]["code"], "UnknownNamespace");
    assert_eq!(v["results"][2]["code"], "InvalidKey");
    assert_eq!(client.total("events", b"video:4").await.unwrap().sum, 1);

    // Op ids over HTTP count once, however often the batch is sent.
    let op = format!("{:032x}", new_op_id());
    let batch =
        json!({"consistency": "all", "increments": [{"key": "video:5", "delta": 3, "op_id": op}]});
    for h in [&h0, &h1, &h0] {
        let (status, v) = call(h, "POST", "/v1/increments", Some(batch.clone())).await;
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(client.total("events", b"video:5").await.unwrap().sum, 3);

    // Bad requests get typed errors and change nothing.
    let before = client.total("events", b"video:1/view").await.unwrap().sum;
    for (path, body, want_status, want_code) in [
        ("/v1/increments", "{\"increments\": [", 400, "BadRequest"),
        (
            "/v1/increments",
            "{\"increments\": [{\"key\": \"video:1/view\", \"op_id\": \"zz\"}]}",
            400,
            "BadRequest",
        ),
        (
            "/v1/increments",
            "{\"increments\": [{\"key\": \"video:1/view\", \"surprise\": 1}]}",
            400,
            "BadRequest",
        ),
        ("/v1/increments", "{\"increments\": []}", 400, "BadRequest"),
    ] {
        let (addr, path, body) = (h0.clone(), path.to_owned(), body.as_bytes().to_vec());
        let answer = tokio::task::spawn_blocking(move || http(&addr, "POST", &path, Some(&body)))
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(
            (answer.status, v["code"].as_str()),
            (want_status, Some(want_code)),
            "{v}"
        );
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    let huge = vec![b' '; 17 << 20];
    let addr = h0.clone();
    let answer =
        tokio::task::spawn_blocking(move || http(&addr, "POST", "/v1/increments", Some(&huge)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(answer.status, 413, "{}", answer.body);
    let (status, v) = call(&h0, "GET", "/v1/counters/nope/video:1", None).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("UnknownNamespace"))
    );
    let (status, v) = call(
        &h0,
        "GET",
        "/v1/counters/events/video:1/range?from=now&to=-1h",
        None,
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("InvalidRange")));
    let (status, v) = call(
        &h0,
        "GET",
        "/v1/counters/events/video:1/range?from=yesterday",
        None,
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("BadRequest")));
    let (status, v) = call(&h0, "GET", "/v1/nothing/here", None).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("NotFound")));
    assert_eq!(
        client.total("events", b"video:1/view").await.unwrap().sum,
        before
    );

    // The cluster's views and the probes.
    let (status, v) = call(&h0, "GET", "/v1/namespaces", None).await;
    assert_eq!(status, 200);
    assert!(v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == "events"));
    let (status, v) = call(&h0, "GET", "/v1/status", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["peers"].as_array().unwrap().len(), 2);
    let (status, v) = call(&h0, "GET", "/v1/ring", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(call(&h0, "GET", "/healthz", None).await.0, 200);
    assert_eq!(call(&h0, "GET", "/readyz", None).await.0, 200);
}

/// docs/openapi.json names exactly the routes the node serves, and each
/// one is served (a documented route that fell through to the router's
/// fallback would answer `NotFound`, a wrong method 405).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_adds_over_http_are_read_by_the_binary_protocol_and_back() {
    let cluster = Cluster::start(
        3,
        3,
        &["--set", "namespaces.viewers=distinct, day:30d, total"],
    )
    .await;
    let h = cluster.http_addr(1);
    let client = cluster.client(Consistency::Quorum).await;
    let (status, v) = call(
        &h,
        "POST",
        "/v1/adds",
        Some(json!({"namespace": "viewers", "adds": [
            {"key": "video:1", "member": "ann"},
            {"key": "video:1", "member": "bob", "timestamp": "-1d"},
            {"key": "video:1", "member": "ann", "timestamp": "-1d"},
            {"key": "video:1", "member": "ann"},
            {"key": "video:1", "member": ""},
            {"key": "video:1", "member": "cy", "namespace": "events"},
        ]})),
    )
    .await;
    assert_eq!(status, 207, "{v}");
    assert_eq!(
        (v["ok"].as_u64(), v["failed"].as_u64()),
        (Some(4), Some(2)),
        "{v}"
    );
    assert_eq!(v["results"][4]["code"], "InvalidMember", "{v}");
    assert_eq!(v["results"][5]["code"], "WrongKind", "{v}");

    // Two days, two members: ann on both counts once in the union.
    let (points, union) = client
        .distinct(
            "viewers",
            b"video:1",
            tally_client::Resolution::Day,
            now_ms() - 3 * 86_400_000,
            now_ms() + 1,
        )
        .await
        .unwrap();
    assert_eq!(
        points.iter().map(|p| p.estimate).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(union, 2);
    let (status, v) = call(&h, "GET", "/v1/distinct/viewers/video:1?from=-3d", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["distinct"], 2, "{v}");
    assert_eq!(v["points"].as_array().unwrap().len(), 2, "{v}");
    let (status, v) = call(&h, "GET", "/v1/distinct/events/video:1", None).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("WrongKind")),
        "{v}"
    );
    let (status, v) = call(
        &h,
        "POST",
        "/v1/adds",
        Some(json!({"adds": [{"key": "k", "member": "m"}]})),
    )
    .await;
    assert_eq!(status, 400, "an add names its namespace: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_file_lists_exactly_the_routes_served() {
    let spec: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented: Vec<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let mut served = tally_node::http::routes();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);

    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &format!("127.0.0.1:{}", free_port()),
        "periodic",
    );
    let h = node.http.clone().unwrap();
    for (method, path) in &served {
        let path = path
            .replace("{namespace}", "events")
            .replace("{key}", "k")
            .replace("{name}", "events");
        let body = (method == "POST").then(|| b"{}".to_vec());
        let (addr, m, p) = (h.clone(), method.clone(), path.clone());
        let answer = tokio::task::spawn_blocking(move || http(&addr, &m, &p, body.as_deref()))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(answer.status, 405, "{method} {path}: {}", answer.body);
        let v: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        assert_ne!(v["code"], "NotFound", "{method} {path} is not served: {v}");
    }
}

/// `name{labels} value` lines of an exposition (classic, or OpenMetrics
/// ending in `# EOF`), by series; `None` when a line is not valid.
fn parse_exposition(text: &str) -> Option<std::collections::BTreeMap<String, f64>> {
    let mut series = std::collections::BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            return lines.peek().is_none().then_some(series);
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut words = meta.splitn(3, ' ');
            let keyword = words.next()?;
            let name = words.next()?;
            if !matches!(keyword, "HELP" | "TYPE" | "UNIT") || !name.starts_with("tally_") {
                return None;
            }
            continue;
        }
        let (name, value) = line.rsplit_once(' ')?;
        let value: f64 = value.parse().ok()?;
        let bare = name.split('{').next()?;
        if !bare.starts_with("tally_")
            || !bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.contains('{') != name.ends_with('}')
        {
            return None;
        }
        series.insert(name.to_owned(), value);
    }
    Some(series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_an_exposition_and_move_with_the_workload() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let h = cluster.http_addr(0);
    let scrape = || async {
        let addr = h.clone();
        let answer = tokio::task::spawn_blocking(move || http(&addr, "GET", "/metrics", None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.status, 200);
        parse_exposition(&answer.body)
            .unwrap_or_else(|| panic!("not an exposition:\n{}", answer.body))
    };
    let before = scrape().await;
    for name in [
        "tally_increments_applied_total",
        "tally_events_applied_total",
        "tally_hints_pending",
        "tally_op_window_ids",
        "tally_connections",
        "tally_peers_up",
        "tally_epoch",
        "tally_storage_wal_syncs_total{engine=\"counters\"}",
        "tally_storage_l0_files{engine=\"hints\"}",
        "tally_disk_bytes",
    ] {
        assert!(
            before.contains_key(name),
            "{name} missing: {:?}",
            before.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(before["tally_peers_up"], 2.0);
    let client = cluster.client_of(0, Consistency::Quorum).await;
    for _ in 0..20 {
        let outcomes = client.increment(vec![inc("m", 1), inc("n", 2)]).await;
        assert!(outcomes.iter().all(|o| o.is_ok()));
    }
    let (status, _) = call(
        &h,
        "POST",
        "/v1/increments",
        Some(json!({"increments": [{"key": "m"}, {"key": "m", "namespace": "nope"}]})),
    )
    .await;
    assert_eq!(status, 207);
    let after = scrape().await;
    let moved = |name: &str| {
        after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    assert!(moved("tally_requests_total{kind=\"increment\"}") >= 21.0);
    assert!(moved("tally_increment_items_total{result=\"ok\",code=\"\"}") >= 41.0);
    assert_eq!(
        moved("tally_increment_items_total{result=\"failed\",code=\"UnknownNamespace\"}"),
        1.0
    );
    assert!(moved("tally_request_duration_seconds_count{kind=\"increment\"}") >= 21.0);
    assert!(after.keys().any(|k| {
        k.starts_with("tally_request_duration_seconds_bucket{") && k.contains("kind=\"increment\"")
    }));
    assert!(moved("tally_storage_user_bytes_total{engine=\"counters\"}") > 0.0);
    // Small groups, one request at a time: the requests' workers write them.
    assert!(moved("tally_write_groups_total{writer=\"worker\"}") >= 20.0);
    assert!(after.contains_key("tally_write_groups_total{writer=\"thread\"}"));
    for name in [
        "tally_storage_memtable_bytes{engine=\"counters\"}",
        "tally_gossip_phi_max",
        "tally_storage_wal_sync_duration_seconds_bucket{le=\"+Inf\",engine=\"counters\"}",
    ] {
        assert!(after.contains_key(name), "{name} missing");
    }
    assert!(after["tally_storage_memtable_bytes{engine=\"counters\"}"] > 0.0);
    // Every WAL fsync is timed: the histogram counts what the counter
    // counts (the background fsync may run between the two reads).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = scrape().await;
        let synced = now["tally_storage_wal_syncs_total{engine=\"counters\"}"];
        let timed = now["tally_storage_wal_sync_duration_seconds_count{engine=\"counters\"}"];
        assert!(
            timed <= synced + 1.0 && synced <= timed + 1.0,
            "{timed} vs {synced}"
        );
        if timed > 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no WAL fsync was timed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `/v1/cluster` joins the membership with what every member reports,
/// the console page that reads it is served at `/`, and a node with
/// metrics off answers `/metrics` with a typed 404 and counts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_overview_and_the_console_page() {
    let mut cluster = Cluster::start(3, 3, &[]).await;
    let h = cluster.http_addr(1);
    let client = cluster.client_of(0, Consistency::Quorum).await;
    for i in 0..30 {
        let outcomes = client.increment(vec![inc(&format!("o{i}"), 1)]).await;
        assert!(outcomes.iter().all(|o| o.is_ok()));
    }
    for _ in 0..5 {
        assert_eq!(total_over_http(&h, "o1").await, 1);
    }
    let (status, v) = call(&h, "GET", "/v1/cluster", None).await;
    assert_eq!(status, 200, "{v}");
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{v}");
    assert_eq!(v["replication_factor"], 3);
    let mut increments = 0;
    let mut reads = 0;
    for m in members {
        assert_eq!(m["up"], true, "{m}");
        assert_eq!(m["state"], "normal", "{m}");
        assert!((m["ownership"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{m}");
        let r = &m["reported"];
        assert_eq!(r["storage"], "ok", "{m}");
        increments += r["increments"].as_u64().unwrap();
        reads += r["reads"].as_u64().unwrap();
    }
    assert_eq!(increments, 30, "{v}");
    assert!(reads >= 5, "{v}");

    let addr = h.clone();
    let page = tokio::task::spawn_blocking(move || http(&addr, "GET", "/", None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.body.starts_with("<!doctype html>"),
        "{}",
        path_of(&page.body)
    );
    assert!(page.body.contains("/v1/cluster") && page.body.contains("rate-chart"));

    // A member that is down is listed down, without a report.
    cluster.stop(2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, v) = call(&h, "GET", "/v1/cluster", None).await;
        let down: Vec<&Value> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["up"] == false)
            .collect();
        if down.len() == 1 {
            assert!(down[0]["reported"].is_null(), "{v}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never seen down: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[test]
fn a_node_with_metrics_off_answers_metrics_with_a_typed_404() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = NodeCommand::new(&node_bin(), &dir.path().join("data"), &addr)
        .args(&["--set".into(), "http.metrics=false".into()])
        .spawn()
        .unwrap();
    node.wait_serving(std::time::Duration::from_secs(20))
        .unwrap();
    let h = node.http.clone().unwrap();
    let answer = http(&h, "GET", "/metrics", None).unwrap();
    assert_eq!(answer.status, 404, "{}", answer.body);
    let v: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(v["code"], "MetricsOff", "{v}");
    let answer = http(
        &h,
        "POST",
        "/v1/increments",
        Some(br#"{"increments": [{"key": "k"}]}"#),
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// A body is budgeted before it is read, and must arrive within the frame
/// timeout: the HTTP port cannot be made to buffer without bound or be
/// held by slow senders, as the binary port cannot.
#[test]
fn bodies_are_budgeted_before_they_are_read_and_timed() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = NodeCommand::new(&node_bin(), &dir.path().join("data"), &addr)
        .args(&[
            "--set".into(),
            "connections.max_buffered_mib=1".into(),
            "--set".into(),
            "connections.frame_timeout_s=1".into(),
            "--set".into(),
            "connections.idle_timeout_s=2".into(),
        ])
        .spawn()
        .unwrap();
    node.wait_serving(std::time::Duration::from_secs(20))
        .unwrap();
    let h = node.http.clone().unwrap();
    let exchange = |head: String, body: &[u8], pause: std::time::Duration| {
        let mut stream = std::net::TcpStream::connect(&h).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let _ = stream.write_all(body);
        std::thread::sleep(pause);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    // Declares more than the node's whole budget: refused unread.
    let answer = exchange(
        format!("POST /v1/increments HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n", 2 << 20),
        b"{",
        std::time::Duration::ZERO,
    );
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("Overloaded"), "{answer}");
    // Sends 10 of 100 declared bytes, then stalls: 408 after the timeout.
    let answer = exchange(
        "POST /v1/increments HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 100\r\n\r\n".into(),
        b"{\"increme",
        std::time::Duration::from_millis(1500),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A connection that sends nothing is closed after the idle timeout.
    let mut idle = std::net::TcpStream::connect(&h).unwrap();
    idle.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = idle.read_to_end(&mut rest);
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(1900)
            && waited < std::time::Duration::from_secs(8),
        "closed after {waited:?}"
    );
    // The node still serves.
    let ok = http(&h, "GET", "/healthz", None).unwrap();
    assert_eq!(ok.status, 200);
    node.stop().unwrap();
}

/// Every series the Grafana dashboard (deploy/grafana/tally.json) queries
/// exists in a real node's `/metrics` once it has seen a workload, a
/// refused request and a failed item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_series_a_node_exports() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../deploy/grafana/tally.json")).unwrap();
    let mut wanted = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("tally_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                wanted.insert(name);
            }
        }
    }
    assert!(wanted.len() > 20, "{wanted:?}");

    let cluster = Cluster::start(3, 3, &[]).await;
    let h = cluster.http_addr(0);
    let client = cluster.client_of(0, Consistency::Quorum).await;
    assert!(client
        .increment(vec![inc("d", 1)])
        .await
        .iter()
        .all(|o| o.is_ok()));
    assert!(client.total("nope", b"d").await.is_err());
    call(
        &h,
        "POST",
        "/v1/increments",
        Some(json!({"increments": [{"key": "d", "namespace": "nope"}]})),
    )
    .await;
    // And a node with Raft-agreed metadata, for the Raft series.
    let dir = tempfile::tempdir().unwrap();
    let raft = NodeProcess::start_with(
        dir.path(),
        &format!("127.0.0.1:{}", free_port()),
        &["--init".into()],
    );
    let mut exported = std::collections::BTreeSet::new();
    for addr in [h.clone(), raft.http.clone().unwrap()] {
        let text = tokio::task::spawn_blocking(move || http(&addr, "GET", "/metrics", None))
            .await
            .unwrap()
            .unwrap()
            .body;
        exported.extend(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned)),
        );
    }
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series no node exports: {missing:?}"
    );
}
