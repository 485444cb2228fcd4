//! Client verbs against a running master's gRPC API: human tables, or `--json` for scripts.

use super::table::Table;
use anyhow::{Context, bail};
use heatmesh_proto::v1 as pb;
use pb::mesh_service_client::MeshServiceClient;
use pb::task_service_client::TaskServiceClient;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::Channel;

/// Opens a channel to the master, with a clear error when nothing listens there.
pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Channel::from_shared(uri.clone())
        .with_context(|| format!("invalid --addr {addr:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| {
            format!(
                "connecting to the heatmesh master at {uri} (is `heatmesh up` running? see --addr)"
            )
        })
}

/// Turns a gRPC status into an error that shows its code and message.
pub fn rpc_err(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// `--json` switch.
#[derive(clap::Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `heatmesh submit`.
#[derive(clap::Args)]
pub struct SubmitArgs {
    /// Plant id, e.g. Plant-001.
    #[arg(long)]
    plant: String,
    /// Agent kind, e.g. gl-009.
    #[arg(long)]
    kind: String,
    /// Request JSON file (`-` for stdin), in the shape documented for the kind.
    #[arg(long, short)]
    input: PathBuf,
    /// critical | high | normal | low
    #[arg(long, default_value = "normal")]
    priority: String,
    /// Fail the task if not completed within this time, e.g. 30s, 5m.
    #[arg(long, value_parser = humantime::parse_duration)]
    deadline: Option<Duration>,
    /// Resubmitting with the same key returns the same task.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Failed attempts allowed (default: the master's).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Wait for the result and print it.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    out: JsonFlag,
}

fn priority(s: &str) -> anyhow::Result<pb::Priority> {
    Ok(match s {
        "critical" => pb::Priority::Critical,
        "high" => pb::Priority::High,
        "normal" => pb::Priority::Normal,
        "low" => pb::Priority::Low,
        _ => bail!("--priority: must be critical, high, normal or low, got {s:?}"),
    })
}

/// Lower-case status name.
pub fn status_name(v: i32) -> String {
    pb::TaskStatus::try_from(v)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATUS_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown({v})"))
}

fn priority_name(v: i32) -> String {
    pb::Priority::try_from(v)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("PRIORITY_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown({v})"))
}

/// A protobuf timestamp as RFC 3339 with milliseconds (empty when unset).
pub fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map(|t| {
            let d = Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + d).to_string()
        })
        .unwrap_or_default()
}

/// A task as JSON for scripts (the result is embedded as JSON, not a string).
pub fn task_json(t: &pb::Task) -> Value {
    let result = t
        .result
        .as_ref()
        .map(|r| serde_json::from_str::<Value>(&r.json).unwrap_or(Value::String(r.json.clone())));
    let history: Vec<Value> = t
        .history
        .iter()
        .map(|h| {
            json!({"from": status_name(h.from), "to": status_name(h.to), "at": time(&h.at),
                   "attempt": h.attempt, "epoch": h.epoch, "node": h.node, "detail": h.detail})
        })
        .collect();
    json!({
        "id": t.id, "plant_id": t.plant_id, "agent_kind": t.agent_kind,
        "status": status_name(t.status), "priority": priority_name(t.priority),
        "attempt": t.attempt, "max_attempts": t.max_attempts, "epoch": t.epoch,
        "node": t.node, "agent": t.agent, "idempotency_key": t.idempotency_key,
        "created_at": time(&t.created_at), "updated_at": time(&t.updated_at),
        "deadline": time(&t.deadline), "error": t.error, "seq": t.seq,
        "result": result, "history": history,
    })
}

fn print_task(t: &pb::Task) {
    println!(
        "task {}  {}  on {} ({})",
        t.id,
        status_name(t.status),
        t.plant_id,
        t.agent_kind
    );
    println!(
        "  priority {}  attempt {}  epoch {}  agent {}",
        priority_name(t.priority),
        t.attempt,
        t.epoch,
        t.agent
    );
    println!(
        "  created {}  updated {}",
        time(&t.created_at),
        time(&t.updated_at)
    );
    if t.deadline.is_some() {
        println!("  deadline {}", time(&t.deadline));
    }
    if !t.error.is_empty() {
        println!("  error: {}", t.error);
    }
    if let Some(r) = &t.result {
        let pretty = serde_json::from_str::<Value>(&r.json)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| r.json.clone());
        println!("  result:\n{}", indent(&pretty, 4));
    }
    if !t.history.is_empty() {
        let mut tb = Table::new(&["at", "from", "to", "attempt", "epoch", "detail"]);
        for h in &t.history {
            tb.row(vec![
                time(&h.at),
                status_name(h.from).replace("unspecified", "-"),
                status_name(h.to),
                h.attempt.to_string(),
                h.epoch.to_string(),
                h.detail.clone(),
            ]);
        }
        println!("  history:\n{}", indent(&tb.render(), 4));
    }
}

/// Each line of `s` indented by `n` spaces (no trailing newline).
pub fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `heatmesh submit`.
pub async fn submit(addr: &str, a: SubmitArgs) -> anyhow::Result<()> {
    let json = crate::read_input(&a.input)?;
    serde_json::from_str::<Value>(&json)
        .with_context(|| format!("{} is not valid JSON", a.input.display()))?;
    let req = pb::SubmitTaskRequest {
        plant_id: a.plant,
        payload: Some(pb::TaskPayload {
            request: Some(pb::task_payload::Request::Json(pb::JsonRequest {
                agent_kind: a.kind,
                json,
            })),
        }),
        idempotency_key: a.idempotency_key.unwrap_or_default(),
        priority: priority(&a.priority)? as i32,
        deadline: a.deadline.map(|d| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        max_attempts: a.max_attempts.unwrap_or(0),
    };
    let mut client = TaskServiceClient::new(connect(addr).await?);
    let resp = client.submit_task(req).await.map_err(rpc_err)?.into_inner();
    let mut task = resp.task.context("master returned no task")?;
    if a.wait {
        task = watch_until_done(&mut client, &task.id, |_| {}).await?;
    }
    if a.out.json {
        let mut v = task_json(&task);
        v["duplicate"] = json!(resp.duplicate);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if a.wait {
        print_task(&task);
    } else {
        let dup = if resp.duplicate {
            " (duplicate idempotency key: existing task)"
        } else {
            ""
        };
        println!(
            "accepted task {} ({}){dup}",
            task.id,
            status_name(task.status)
        );
    }
    Ok(())
}

/// Follows a task with WatchTask until it is terminal; `each` sees every state.
pub async fn watch_until_done(
    client: &mut TaskServiceClient<Channel>,
    id: &str,
    mut each: impl FnMut(&pb::Task),
) -> anyhow::Result<pb::Task> {
    let mut stream = client
        .watch_task(pb::GetTaskRequest { id: id.to_string() })
        .await
        .map_err(rpc_err)?
        .into_inner();
    let mut last = None;
    while let Some(t) = stream.message().await.map_err(rpc_err)? {
        each(&t);
        last = Some(t);
    }
    last.with_context(|| format!("watch of task {id} ended without a state"))
}

/// Arguments of `heatmesh task`.
#[derive(clap::Args)]
pub struct TaskArgs {
    /// Task id.
    id: String,
    /// Follow state changes until the task is terminal.
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    out: JsonFlag,
}

/// `heatmesh task <id> [--watch]`.
pub async fn task(addr: &str, a: TaskArgs) -> anyhow::Result<()> {
    let mut client = TaskServiceClient::new(connect(addr).await?);
    if a.watch {
        let json = a.out.json;
        watch_until_done(&mut client, &a.id, |t| {
            if json {
                println!("{}", task_json(t));
            } else {
                println!(
                    "{}  task {}  {}  attempt {}",
                    time(&t.updated_at),
                    t.id,
                    status_name(t.status),
                    t.attempt
                );
            }
        })
        .await?;
    }
    let t = client
        .get_task(pb::GetTaskRequest { id: a.id })
        .await
        .map_err(rpc_err)?
        .into_inner();
    if a.out.json {
        println!("{}", serde_json::to_string_pretty(&task_json(&t))?);
    } else {
        print_task(&t);
    }
    Ok(())
}

/// Arguments of `heatmesh tasks`.
#[derive(clap::Args)]
pub struct TasksArgs {
    #[command(subcommand)]
    action: Option<TasksAction>,
    /// Only these states (repeatable): pending, dispatched, completed, failed, orphaned, cancelled.
    #[arg(long)]
    status: Vec<String>,
    /// Only this plant.
    #[arg(long)]
    plant: Option<String>,
    /// Only this agent kind.
    #[arg(long)]
    kind: Option<String>,
    /// Most tasks to show.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(clap::Subcommand)]
enum TasksAction {
    /// Put failed tasks back to pending with a fresh attempt budget.
    RetryFailed {
        /// Only this plant.
        #[arg(long)]
        plant: Option<String>,
        /// Only this agent kind.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Move the busiest plant (and its queued work) off the most loaded node.
    Rebalance,
    /// Cancel orphaned tasks unchanged for longer than the given age.
    ClearOrphaned {
        /// Age, e.g. 60m.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
    },
}

/// `heatmesh tasks [...]`.
pub async fn tasks(addr: &str, a: TasksArgs) -> anyhow::Result<()> {
    let mut client = TaskServiceClient::new(connect(addr).await?);
    match a.action {
        Some(TasksAction::RetryFailed { plant, kind }) => {
            let r = client
                .retry_failed(pb::RetryFailedRequest {
                    plant_id: plant.unwrap_or_default(),
                    agent_kind: kind.unwrap_or_default(),
                })
                .await
                .map_err(rpc_err)?
                .into_inner();
            return print_bulk(&r, "retried", a.out.json);
        }
        Some(TasksAction::Rebalance) => {
            let r = client
                .rebalance_tasks(pb::RebalanceTasksRequest {})
                .await
                .map_err(rpc_err)?
                .into_inner();
            if a.out.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "moves": r.moves }))?
                );
            } else if r.moves.is_empty() {
                println!("load is even: nothing moved");
            } else {
                for m in &r.moves {
                    println!("moved {m}");
                }
            }
            return Ok(());
        }
        Some(TasksAction::ClearOrphaned { older_than }) => {
            let r = client
                .clear_orphaned(pb::ClearOrphanedRequest {
                    older_than: Some(prost_types::Duration {
                        seconds: older_than.as_secs() as i64,
                        nanos: older_than.subsec_nanos() as i32,
                    }),
                })
                .await
                .map_err(rpc_err)?
                .into_inner();
            return print_bulk(&r, "cleared", a.out.json);
        }
        None => {}
    }
    let mut statuses = Vec::new();
    for s in &a.status {
        let v = pb::TaskStatus::from_str_name(&format!("TASK_STATUS_{}", s.to_ascii_uppercase()))
            .filter(|v| *v != pb::TaskStatus::Unspecified)
            .with_context(|| {
                format!("--status: unknown state {s:?}; use pending, dispatched, completed, failed, orphaned or cancelled")
            })?;
        statuses.push(v as i32);
    }
    let mut all = Vec::new();
    let mut token = String::new();
    while all.len() < a.limit as usize {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                status: statuses.clone(),
                plant_id: a.plant.clone().unwrap_or_default(),
                agent_kind: a.kind.clone().unwrap_or_default(),
                page_size: (a.limit as usize - all.len()).min(1000) as u32,
                page_token: token,
            })
            .await
            .map_err(rpc_err)?
            .into_inner();
        all.extend(page.tasks);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    if a.out.json {
        let v: Vec<Value> = all.iter().map(task_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut tb = Table::new(&[
        "id", "plant", "kind", "status", "priority", "attempt", "updated", "error",
    ]);
    for t in &all {
        tb.row(vec![
            t.id.clone(),
            t.plant_id.clone(),
            t.agent_kind.clone(),
            status_name(t.status),
            priority_name(t.priority),
            t.attempt.to_string(),
            time(&t.updated_at),
            t.error.clone(),
        ]);
    }
    print!("{}", tb.render());
    Ok(())
}

fn print_bulk(r: &pb::BulkResponse, verb: &str, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ verb: r.affected, "task_ids": r.task_ids }))?
        );
    } else if r.affected == 0 {
        println!("{verb} 0 tasks");
    } else {
        println!("{verb} {} tasks: {}", r.affected, r.task_ids.join(", "));
    }
    Ok(())
}

/// Arguments of `heatmesh agents`.
#[derive(clap::Args)]
pub struct AgentsArgs {
    /// Only this plant.
    #[arg(long)]
    plant: Option<String>,
    /// Only this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only this status: running, restarting, failed.
    #[arg(long)]
    status: Option<String>,
    #[command(flatten)]
    out: JsonFlag,
}

/// `heatmesh agents`.
pub async fn agents(addr: &str, a: AgentsArgs) -> anyhow::Result<()> {
    let mut client = MeshServiceClient::new(connect(addr).await?);
    let r = client
        .list_agents(pb::ListAgentsRequest {
            plant_id: a.plant.unwrap_or_default(),
            kind: a.kind.unwrap_or_default(),
            status: a.status.unwrap_or_default(),
        })
        .await
        .map_err(rpc_err)?
        .into_inner();
    if a.out.json {
        let v: Vec<Value> = r
            .agents
            .iter()
            .map(|g| {
                json!({"name": g.name, "plant_id": g.plant_id, "kind": g.kind, "status": g.status,
                       "restarts": g.restarts, "version": g.version, "node": g.node, "epoch": g.epoch,
                       "node_status": g.node_status, "node_last_heartbeat": time(&g.node_last_heartbeat),
                       "tasks_completed": g.tasks_completed, "last_change": time(&g.last_change)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut tb = Table::new(&[
        "agent",
        "plant",
        "kind",
        "status",
        "restarts",
        "completed",
        "node",
        "node status",
        "last heartbeat",
        "epoch",
        "version",
    ]);
    for g in &r.agents {
        tb.row(vec![
            g.name.clone(),
            g.plant_id.clone(),
            g.kind.clone(),
            g.status.clone(),
            g.restarts.to_string(),
            g.tasks_completed.to_string(),
            g.node.clone(),
            g.node_status.clone(),
            time(&g.node_last_heartbeat),
            g.epoch.to_string(),
            g.version.clone(),
        ]);
    }
    print!("{}", tb.render());
    Ok(())
}

/// `heatmesh plants`.
pub async fn plants(addr: &str, a: JsonFlag) -> anyhow::Result<()> {
    let mut client = MeshServiceClient::new(connect(addr).await?);
    let r = client
        .list_plants(pb::ListPlantsRequest {})
        .await
        .map_err(rpc_err)?
        .into_inner();
    if a.json {
        let v: Vec<Value> = r
            .plants
            .iter()
            .map(|p| {
                json!({"id": p.id, "name": p.name, "units": p.units, "agents": p.agent_kinds,
                       "balance_threshold_pct": p.closure_threshold_pct, "node": p.node, "epoch": p.epoch,
                       "status": p.status, "queued_tasks": p.queued_tasks, "in_flight_tasks": p.in_flight_tasks})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut tb = Table::new(&[
        "plant",
        "name",
        "status",
        "node",
        "epoch",
        "agents",
        "threshold %",
        "queued",
        "in flight",
    ]);
    for p in &r.plants {
        tb.row(vec![
            p.id.clone(),
            p.name.clone(),
            p.status.clone(),
            p.node.clone(),
            p.epoch.to_string(),
            p.agent_kinds.join(","),
            format!("{}", p.closure_threshold_pct),
            p.queued_tasks.to_string(),
            p.in_flight_tasks.to_string(),
        ]);
    }
    print!("{}", tb.render());
    Ok(())
}

/// `heatmesh nodes`.
pub async fn nodes(addr: &str, a: JsonFlag) -> anyhow::Result<()> {
    let mut client = MeshServiceClient::new(connect(addr).await?);
    let r = client
        .list_nodes(pb::ListNodesRequest {})
        .await
        .map_err(rpc_err)?
        .into_inner();
    if a.json {
        let v: Vec<Value> = r
            .nodes
            .iter()
            .map(|n| {
                json!({"id": n.id, "address": n.address, "status": n.status, "plants": n.plants,
                       "epoch": n.epoch, "last_heartbeat": time(&n.last_heartbeat),
                       "preferred_plants": n.preferred_plants, "lost_reason": n.lost_reason})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut tb = Table::new(&[
        "node",
        "address",
        "status",
        "epoch",
        "plants",
        "prefers",
        "last heartbeat",
        "lost because",
    ]);
    for n in &r.nodes {
        tb.row(vec![
            n.id.clone(),
            if n.address.is_empty() {
                "(in-process)".into()
            } else {
                n.address.clone()
            },
            n.status.clone(),
            n.epoch.to_string(),
            n.plants.join(","),
            n.preferred_plants.join(","),
            time(&n.last_heartbeat),
            n.lost_reason.clone(),
        ]);
    }
    print!("{}", tb.render());
    Ok(())
}
