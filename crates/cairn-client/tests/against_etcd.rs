//! The client against a real etcd (the reference implementation of the API), when an `etcd`
//! binary is on PATH; skipped otherwise. Proves: the convenience calls round-trip, a dead
//! endpoint is skipped for reads and writes, watches deliver events, and errors keep the status.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::proto::etcdserverpb::WatchCreateRequest;
use cairn_client::{ClientConfig, ClientError, EtcdClient};

/// How long etcd may take to start answering.
const ETCD_START_WAIT_MS: u64 = 20_000;

/// A throwaway single-node etcd, killed on drop.
struct Etcd {
    child: Child,
    client_addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A port nothing listens on (bound, then released).
fn dead_endpoint() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn start_etcd() -> Option<Etcd> {
    let data = tempfile::tempdir().expect("temp dir");
    let client = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("default={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(child) => Some(Etcd {
            child,
            client_addr: client,
            _data: data,
        }),
        Err(e) => {
            eprintln!("skipping: cannot start etcd ({e})");
            None
        }
    }
}

async fn wait_ready(client: &EtcdClient) {
    let deadline = Instant::now() + Duration::from_millis(ETCD_START_WAIT_MS);
    while client.status(&client.endpoints()[0]).await.is_err() {
        assert!(Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn client_round_trips_fails_over_and_watches_against_etcd() {
    let Some(etcd) = start_etcd() else { return };
    let live = EtcdClient::new([etcd.client_addr.as_str()]).unwrap();
    wait_ready(&live).await;

    // Round trip.
    live.put("t/a", "1").await.unwrap();
    live.put("t/b", "2").await.unwrap();
    live.put("u", "3").await.unwrap();
    assert_eq!(live.get("t/a").await.unwrap().unwrap().value, b"1");
    assert!(live.get("missing").await.unwrap().is_none());
    let keys: Vec<Vec<u8>> = live
        .get_prefix("t/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, vec![b"t/a".to_vec(), b"t/b".to_vec()]);
    assert_eq!(live.delete("t/a").await.unwrap(), 1);
    assert_eq!(live.delete("t/a").await.unwrap(), 0);
    assert_eq!(live.member_list().await.unwrap().members.len(), 1);
    assert!(!live
        .status(&etcd.client_addr)
        .await
        .unwrap()
        .version
        .is_empty());

    // A dead endpoint first in the list: writes and reads go to the live one.
    let both = EtcdClient::new([dead_endpoint(), etcd.client_addr.clone()]).unwrap();
    both.put("f", "over").await.unwrap();
    assert_eq!(both.get("f").await.unwrap().unwrap().value, b"over");
    assert_eq!(both.preferred_endpoint(), live.endpoints()[0]);

    // Only dead endpoints: bounded attempts, and the error keeps the status.
    let config = ClientConfig {
        attempts_max: 3,
        backoff_initial_ms: 1,
        backoff_max_ms: 2,
        ..ClientConfig::default()
    };
    let dead = EtcdClient::with_config([dead_endpoint()], config).unwrap();
    let err = dead.put("x", "y").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Exhausted { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(err.code(), Some(tonic::Code::Unavailable));

    // A server error is returned at once, with etcd's code.
    let err = live
        .range(cairn_client::proto::etcdserverpb::RangeRequest {
            key: b"t/b".to_vec(),
            revision: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Rpc { .. }), "{err}");
    assert_eq!(err.code(), Some(tonic::Code::OutOfRange));

    // Watch: events after creation arrive in order.
    let (key, range_end) = cairn_client::keys::prefix_range(b"w/");
    let mut watch = live
        .watch_stream(WatchCreateRequest {
            key,
            range_end,
            ..Default::default()
        })
        .await
        .unwrap();
    live.put("w/1", "a").await.unwrap();
    live.delete("w/1").await.unwrap();
    let mut events = Vec::new();
    while events.len() < 2 {
        let response = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("watch event in time")
            .unwrap();
        events.extend(response.events);
    }
    assert_eq!(events[0].kv.as_ref().unwrap().value, b"a");
    assert_eq!(events[1].r#type, 1, "second event is a delete");
    watch.cancel().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("cancel confirmed in time");
    assert!(
        matches!(end, Err(ClientError::WatchCanceled { .. })),
        "{end:?}"
    );
}
