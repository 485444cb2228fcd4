//! `heatmesh backup` and `heatmesh restore`: an online snapshot of a running master's ledger
//! into one self-checking file, and a new data directory rebuilt from it.

use super::client::{connect, rpc_err};
use anyhow::{Context, bail};
use heatmesh_master::ledger::backup::{self, BackupInfo};
use heatmesh_master::ledger::{Ledger, LedgerError};
use heatmesh_proto::v1 as pb;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `heatmesh backup`.
#[derive(clap::Args)]
pub struct BackupArgs {
    /// The backup file to write (written next to it first, then renamed: an interrupted
    /// backup never leaves a file that looks whole).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace `--out` if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print what the backup holds as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `heatmesh restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// The data directory to create (new, or empty); point a master's `data_dir` at it.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Print what was restored as JSON.
    #[arg(long)]
    pub json: bool,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn describe(info: &BackupInfo) -> String {
    format!(
        "{} tasks (highest id {}), {} entries, consistent at log position {}, {}",
        info.tasks,
        info.max_task_id,
        info.entries,
        info.lsn,
        mib(info.bytes)
    )
}

/// Takes a backup of the master at `addr` into `a.out`.
pub async fn backup(addr: &str, a: BackupArgs) -> anyhow::Result<()> {
    if a.out.exists() && !a.force {
        bail!(
            "{} exists; give another --out, or --force to replace it",
            a.out.display()
        );
    }
    let name = a
        .out
        .file_name()
        .with_context(|| format!("--out {}: not a file name", a.out.display()))?
        .to_string_lossy();
    let part = a.out.with_file_name(format!(".{name}.partial"));
    let started = Instant::now();
    let result = receive(addr, &part).await;
    let info = match result.and_then(|()| backup::verify(&part).map_err(anyhow::Error::from)) {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e.context(format!("backup to {}", a.out.display())));
        }
    };
    std::fs::rename(&part, &a.out)
        .with_context(|| format!("renaming {} to {}", part.display(), a.out.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!(
            "backup {}: {} in {:.1} s",
            a.out.display(),
            describe(&info),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Streams the master's backup into `part`, saying how far it got about once a second.
async fn receive(addr: &str, part: &Path) -> anyhow::Result<()> {
    let mut client = pb::mesh_service_client::MeshServiceClient::new(connect(addr).await?);
    let mut stream = client
        .backup(pb::BackupRequest {})
        .await
        .map_err(rpc_err)?
        .into_inner();
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(part).with_context(|| format!("creating {}", part.display()))?,
    );
    let (mut got, mut said) = (0u64, Instant::now());
    while let Some(chunk) = stream.message().await.map_err(rpc_err)? {
        f.write_all(&chunk.data)
            .with_context(|| format!("writing {}", part.display()))?;
        got += chunk.data.len() as u64;
        if said.elapsed() >= Duration::from_secs(1) {
            eprintln!("backup: {} received", mib(got));
            said = Instant::now();
        }
    }
    let f = f
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", part.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", part.display()))?;
    Ok(())
}

/// Rebuilds a data directory from a backup file and checks that a ledger opens on it.
pub fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let info = backup::restore(&a.file, &a.data_dir).with_context(|| {
        format!(
            "restoring {} into {}",
            a.file.display(),
            a.data_dir.display()
        )
    })?;
    let held = open_and_count(&a.data_dir)
        .with_context(|| format!("opening the restored ledger in {}", a.data_dir.display()))?;
    if held != info.tasks {
        bail!(
            "the restored ledger in {} holds {held} tasks, the backup {}",
            a.data_dir.display(),
            info.tasks
        );
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!(
            "restored {} into {}: {} in {:.1} s; start a master with data_dir = {:?}",
            a.file.display(),
            a.data_dir.display(),
            describe(&info),
            started.elapsed().as_secs_f64(),
            a.data_dir.display().to_string()
        );
    }
    Ok(())
}

/// Opens the ledger as a master would and counts its tasks.
fn open_and_count(dir: &Path) -> anyhow::Result<u64> {
    // sled releases the directory's lock a moment after the restore's handle is dropped.
    let end = Instant::now() + Duration::from_secs(10);
    let ledger = loop {
        match Ledger::open(dir) {
            Err(LedgerError::Storage(_)) if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => break r?,
        }
    };
    let mut n = 0u64;
    for t in ledger.scan_all() {
        t?;
        n += 1;
    }
    Ok(n)
}
