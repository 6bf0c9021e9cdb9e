//! The commands that talk to a running node's API: publish, remove, get, list, watch, status,
//! reevaluate.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use p2p_node::client::{Client, ClientError, PublishArgs};
use p2p_node::config::{DEFAULT_API, api_address_of};
use p2p_node::units::{format_duration, format_rate, format_size};
use serde_json::Value;

use crate::{EXIT_CONFIG, EXIT_FAILURE, fail};

/// Which node to talk to.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The node's API address (host:port) [default: 127.0.0.1:9000].
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    api: Option<String>,
    /// Read the API address from this node configuration (its `api` key).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The API commands.
#[derive(Subcommand, Debug)]
pub enum ApiCommand {
    /// Publish FILE as an artifact of kind K; prints its id (64 hex digits) on stdout.
    Publish {
        #[command(flatten)]
        target: Target,
        /// The artifact's bytes.
        file: PathBuf,
        /// The artifact's kind (0..=65535): the channel the priority function sorts by.
        #[arg(long, value_name = "K")]
        kind: u16,
        /// Attribute bytes copied into the advert, as a string.
        #[arg(long, value_name = "A", conflicts_with = "attr_hex")]
        attr: Option<String>,
        /// Attribute bytes, as hex.
        #[arg(long, value_name = "HEX")]
        attr_hex: Option<String>,
    },
    /// Remove artifact ID from the node's pool (peers are told to forget its advert).
    Remove {
        #[command(flatten)]
        target: Target,
        /// The artifact id (64 hex digits).
        id: String,
    },
    /// Write artifact ID's bytes to FILE (or stdout), from the node's pool or deliveries_dir.
    Get {
        #[command(flatten)]
        target: Target,
        /// The artifact id (64 hex digits).
        id: String,
        /// Where to write (through FILE.part and a rename); stdout if absent.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List the node's pool: id, kind, size.
    List {
        #[command(flatten)]
        target: Target,
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Print one line per delivery as it arrives: id, kind, size, source peer, time since.
    Watch {
        #[command(flatten)]
        target: Target,
        /// Exit after this many deliveries.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Print the API's JSON lines instead.
        #[arg(long)]
        json: bool,
    },
    /// Print the node's peers, pool, in-flight transfers and rates.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Ask the node's priority function again about every kept advert.
    Reevaluate {
        #[command(flatten)]
        target: Target,
    },
}

impl ApiCommand {
    fn target(&self) -> &Target {
        match self {
            ApiCommand::Publish { target, .. }
            | ApiCommand::Remove { target, .. }
            | ApiCommand::Get { target, .. }
            | ApiCommand::List { target, .. }
            | ApiCommand::Watch { target, .. }
            | ApiCommand::Status { target, .. }
            | ApiCommand::Reevaluate { target } => target,
        }
    }
}

impl Target {
    /// The API address: `--api`, else `--config`'s `api`, else the default.
    fn resolve(&self) -> Result<SocketAddr, String> {
        if let Some(a) = &self.api {
            let a = a.trim_start_matches("http://").trim_end_matches('/');
            return a
                .to_socket_addrs()
                .map_err(|e| format!("--api `{a}`: {e}"))?
                .next()
                .ok_or_else(|| format!("--api `{a}` resolves to no address"));
        }
        if let Some(path) = &self.config {
            return match api_address_of(path) {
                Ok(Some(a)) => Ok(a),
                Ok(None) => Err(format!(
                    "{}: the API is off (`api = \"off\"`)",
                    path.display()
                )),
                Err(e) => Err(e.to_string()),
            };
        }
        Ok(DEFAULT_API)
    }
}

/// Runs one API command; returns the exit code.
pub fn main(cmd: ApiCommand) -> u8 {
    let addr = match cmd.target().resolve() {
        Ok(a) => a,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_FAILURE, format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(run(Client::new(addr), cmd)) {
        Ok(code) => code,
        Err(e) => fail(EXIT_FAILURE, e),
    }
}

async fn run(client: Client, cmd: ApiCommand) -> Result<u8, ClientError> {
    match cmd {
        ApiCommand::Publish {
            file,
            kind,
            attr,
            attr_hex,
            ..
        } => {
            let attr = match (attr, attr_hex) {
                (Some(a), _) => a.into_bytes(),
                (None, Some(h)) => match hex::decode(&h) {
                    Ok(b) => b,
                    Err(e) => return Ok(fail(EXIT_CONFIG, format!("--attr-hex `{h}`: {e}"))),
                },
                (None, None) => Vec::new(),
            };
            let len = std::fs::metadata(&file)
                .map_err(|e| ClientError::Io(format!("cannot read {}: {e}", file.display())))?
                .len();
            // The node would refuse it with 413 after the first bytes over its limit, and a
            // client still sending may see the connection reset rather than the answer.
            let max = client.status().await?["max_artifact_size"].as_u64();
            if let Some(max) = max.filter(|&m| len > m) {
                return Err(ClientError::Status {
                    status: hyper::StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!(
                        "{} is {len} bytes, more than the node's max_artifact_size of {max} \
                         bytes (checked before sending)",
                        file.display(),
                    ),
                });
            }
            let v = client.publish(&PublishArgs { kind, attr }, &file).await?;
            println!("{}", str_of(&v, "id"));
            eprintln!(
                "published {} (kind {kind}, {})",
                file.display(),
                format_size(u64_of(&v, "size"))
            );
        }
        ApiCommand::Remove { id, .. } => {
            let v = client.remove(&id).await?;
            println!("removed {}", str_of(&v, "removed"));
        }
        ApiCommand::Get { id, out, .. } => {
            let n = client.get(&id, out.as_deref()).await?;
            if let Some(out) = out {
                eprintln!("wrote {} to {}", format_size(n), out.display());
            }
        }
        ApiCommand::List { json, .. } => list(&client, json).await?,
        ApiCommand::Watch { count, json, .. } => return watch(&client, count, json).await,
        ApiCommand::Status { json, .. } => {
            let v = client.status().await?;
            if json {
                println!("{v}");
            } else {
                print_status(&v);
            }
        }
        ApiCommand::Reevaluate { .. } => {
            client.reevaluate().await?;
            println!("re-evaluated");
        }
    }
    Ok(0)
}

async fn list(client: &Client, json: bool) -> Result<(), ClientError> {
    let mut from = 0;
    loop {
        let page = client.list(from, p2p_node::api::LIST_PAGE).await?;
        if json {
            println!("{page}");
        } else {
            for a in page["artifacts"].as_array().into_iter().flatten() {
                println!(
                    "{}  kind {:>5}  {:>10}",
                    str_of(a, "id"),
                    u64_of(a, "kind"),
                    format_size(u64_of(a, "size"))
                );
            }
        }
        match page["next"].as_u64() {
            Some(next) => from = next,
            None => {
                if !json {
                    eprintln!(
                        "{} artifacts, {}",
                        u64_of(&page["pool"], "artifacts"),
                        format_size(u64_of(&page["pool"], "bytes"))
                    );
                }
                return Ok(());
            }
        }
    }
}

async fn watch(client: &Client, count: Option<u64>, json: bool) -> Result<u8, ClientError> {
    use std::io::Write;
    let mut w = client.watch().await?;
    let mut seen = 0u64;
    while count.is_none_or(|c| seen < c) {
        let Some(ev) = w.next().await? else {
            eprintln!("the node closed the stream");
            return Ok(EXIT_FAILURE);
        };
        let line = match ev["event"].as_str() {
            Some("delivered") => {
                seen += 1;
                if json {
                    ev.to_string()
                } else {
                    delivery_line(&ev)
                }
            }
            Some("watching") => {
                eprintln!("watching deliveries at {}", client.addr());
                continue;
            }
            Some("lagged") if json => ev.to_string(),
            Some("lagged") => format!(
                "lagged: {} deliveries skipped (this watcher fell behind)",
                u64_of(&ev, "skipped")
            ),
            _ => continue,
        };
        let mut out = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) ends the watch.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(0);
        }
    }
    Ok(0)
}

/// `4c3e11926000  kind     1     1.5 MiB  from 9a1f03c2d4e5  (3 ms ago)`: the time since the
/// node delivered it (the publisher's clock is not known, so there is no end-to-end latency).
fn delivery_line(ev: &Value) -> String {
    let ago = ev["time_ms"].as_u64().map_or_else(String::new, |ms| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        format!(
            "  ({} ago)",
            format_duration(Duration::from_millis(now.saturating_sub(ms)))
        )
    });
    format!(
        "{}  kind {:>5}  {:>10}  from {}{ago}",
        short(str_of(ev, "id")),
        u64_of(ev, "kind"),
        format_size(u64_of(ev, "size")),
        short(ev["source"].as_str().unwrap_or("-")),
    )
}

fn print_status(v: &Value) {
    let peers: Vec<&str> = v["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let r = &v["rates"];
    let rate = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!("node       {}", str_of(v, "node_id"));
    println!("listen     {}", str_of(v, "listen"));
    println!(
        "registry   version {}, {} members",
        u64_of(&v["registry"], "version"),
        u64_of(&v["registry"], "members")
    );
    println!(
        "peers      {}{}{}",
        peers.len(),
        if peers.is_empty() { "" } else { ": " },
        peers
            .iter()
            .map(|p| short(p))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let t = &v["topology"];
    let neighbours = t["neighbours"].as_array().map_or(0, Vec::len);
    let graph = &t["graph"];
    let shape = if graph.is_object() {
        format!(
            "; graph of {} members, degree {}..={}, {}",
            u64_of(graph, "nodes"),
            u64_of(graph, "min_degree"),
            u64_of(graph, "max_degree"),
            if graph["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "NOT connected"
            }
        )
    } else {
        String::new()
    };
    println!(
        "topology   {}, {neighbours} neighbours{shape}",
        t["setting"].as_str().unwrap_or("-")
    );
    println!(
        "pool       {} artifacts, {}",
        u64_of(&v["pool"], "artifacts"),
        format_size(u64_of(&v["pool"], "bytes"))
    );
    println!(
        "in flight  {} requests ({}), {} chunks, {} swarms ({} reserved)",
        u64_of(&v["in_flight"], "requests"),
        format_size(u64_of(&v["in_flight"], "bytes")),
        u64_of(&v["in_flight"], "chunks"),
        u64_of(v, "swarms"),
        format_size(u64_of(v, "incomplete_bytes")),
    );
    println!("delivered  {} in all", u64_of(v, "delivered_total"));
    println!(
        "rates      {:.1} deliveries/s, artifacts in {}, socket in {}, out {}",
        rate("deliveries_per_s"),
        format_rate(rate("artifact_bytes_in_per_s")),
        format_rate(rate("socket_bytes_in_per_s")),
        format_rate(rate("socket_bytes_out_per_s")),
    );
    println!(
        "uptime     {}",
        format_duration(Duration::from_secs(u64_of(v, "uptime_s")))
    );
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("?")
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}
