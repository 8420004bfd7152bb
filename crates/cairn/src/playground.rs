//! `cairn playground`: a 3-node Cairn cluster on local ports, in this one process, with its data
//! under one directory, and a few simulated datanodes and a frontend heartbeating to it. Ctrl-C
//! stops everything; the data stays for the next run.

use cairn_server::ServerConfig;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Nodes in the playground cluster.
const PLAYGROUND_NODES: u64 = 3;
/// Port distance between consecutive nodes (client, peer and http sit at +0, +1, +2).
const PORT_STRIDE: u16 = 10;

#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// Directory holding every node's data (node N in DIR/N).
    #[arg(long, default_value = "cairn-playground")]
    pub data_dir: PathBuf,
    /// Client port of node 1; node N uses BASE + 10*(N-1) for client, +1 peer, +2 http.
    #[arg(long, default_value_t = 4379)]
    pub base_port: u16,
    /// Simulated datanodes heartbeating to the cluster (0 for none).
    #[arg(long, default_value_t = 3)]
    pub datanodes: u32,
    /// Invented regions (of no table) each simulated datanode reports; the leader closes them
    /// as orphans within --region-reconcile-interval-ms. The playground's tables give the
    /// datanodes real regions.
    #[arg(long, default_value_t = 0)]
    pub regions_per_node: u32,
    /// Simulated frontends.
    #[arg(long, default_value_t = 1)]
    pub frontends: u32,
}

fn node_config(args: &PlaygroundArgs, id: u64) -> ServerConfig {
    let port = |i: u64, off: u16| args.base_port + PORT_STRIDE * (i as u16 - 1) + off;
    ServerConfig {
        node_id: id,
        data_dir: args.data_dir.join(id.to_string()),
        listen_client: format!("127.0.0.1:{}", port(id, 0)),
        listen_peer: format!("127.0.0.1:{}", port(id, 1)),
        listen_http: format!("127.0.0.1:{}", port(id, 2)),
        initial_cluster: (1..=PLAYGROUND_NODES)
            .map(|i| (i, format!("127.0.0.1:{}", port(i, 1))))
            .collect(),
        ..Default::default()
    }
}

pub async fn run(args: PlaygroundArgs) -> Result<(), String> {
    crate::serve::init_logging();
    if args.base_port as u32 + (PORT_STRIDE as u32) * (PLAYGROUND_NODES as u32) > 65535 {
        return Err(format!(
            "base-port {} leaves no room for 3 nodes",
            args.base_port
        ));
    }
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut nodes = Vec::new();
    let configs: Vec<ServerConfig> = (1..=PLAYGROUND_NODES)
        .map(|i| node_config(&args, i))
        .collect();
    for c in configs.iter().cloned() {
        let mut stop = stop_tx.subscribe();
        nodes.push(tokio::spawn(cairn_server::run(c, async move {
            let _ = stop.recv().await;
        })));
    }
    let endpoints: Vec<String> = configs.iter().map(|c| c.listen_client.clone()).collect();
    // Give the nodes a moment to bind so a port clash is reported before the banner.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, n) in nodes.iter().enumerate() {
        if n.is_finished() {
            let _ = stop_tx.send(());
            let task = nodes.remove(i);
            return match task.await {
                Ok(Err(e)) => Err(format!("node {} failed to start: {e}", i + 1)),
                _ => Err(format!("node {} stopped at start-up", i + 1)),
            };
        }
    }
    println!(
        "Cairn playground: {PLAYGROUND_NODES} nodes, data in {}",
        args.data_dir.display()
    );
    for c in &configs {
        println!(
            "  node {}: client {}  peer {}  http http://{}/health",
            c.node_id, c.listen_client, c.listen_peer, c.listen_http
        );
    }
    let fleet = if args.datanodes + args.frontends > 0 {
        let client = cairn_client::meta::MetaClient::new(&endpoints)
            .map_err(|e| format!("simulated nodes: {e}"))?;
        let config = cairn_sim::SimConfig {
            datanodes: args.datanodes,
            regions_per_node: args.regions_per_node,
            frontends: args.frontends,
            interval_ms: 3000,
            load: cairn_sim::LoadPattern::Sine,
            seed: 0,
            first_node_id: 1000,
        };
        let mut fleet =
            cairn_sim::Fleet::start(client, &config, None).map_err(|e| e.to_string())?;
        println!(
            "  simulated: {} datanodes x {} regions and {} frontends (node ids from 1000)",
            args.datanodes, args.regions_per_node, args.frontends
        );
        if args.datanodes > 0 {
            let load = cairn_sim::WriteLoadConfig::default();
            println!(
                "  a simulated frontend creates {} tables in database \"{}\" and writes to them",
                load.tables, load.database
            );
            fleet.start_writes(load).map_err(|e| e.to_string())?;
        }
        Some(fleet)
    } else {
        None
    };
    println!("Try:");
    println!(
        "  etcdctl --endpoints={} put hello world",
        endpoints.join(",")
    );
    println!(
        "  cairn ctl --endpoints {} endpoint status",
        endpoints.join(",")
    );
    println!("  cairn ctl --endpoints {} node list", endpoints.join(","));
    println!(
        "  cairn ctl --endpoints {} table list sim",
        endpoints.join(",")
    );
    println!("Ctrl-C stops the cluster.");
    crate::serve::shutdown_signal().await;
    println!("stopping...");
    if let Some(fleet) = fleet {
        fleet.stop().await;
    }
    let _ = stop_tx.send(());
    for n in nodes {
        match n.await {
            Ok(Err(e)) => eprintln!("node stopped with error: {e}"),
            Err(e) => eprintln!("node task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    Ok(())
}
