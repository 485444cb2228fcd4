//! `heatmesh` processes on loopback for multi-process drills and tests.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A free loopback port (bound and released; good enough on a quiet test machine). Only for
/// child processes, which must be restarted on the same port (a master after kill -9, its
/// nodes still dialing the old address); in-process servers bind `127.0.0.1:0` and report
/// the port they got.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A child process that is killed (SIGKILL) when dropped.
pub struct Proc {
    child: Option<Child>,
    /// Short name for messages.
    pub name: String,
}

impl Proc {
    /// Starts `bin` with `args` and extra environment; output goes to `log` when given.
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        log: Option<&Path>,
    ) -> std::io::Result<Proc> {
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        match log {
            Some(p) => {
                let f = std::fs::File::create(p)?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        Ok(Proc {
            child: Some(cmd.spawn()?),
            name: name.to_string(),
        })
    }

    /// kill -9: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The OS process id, while this handle owns the child (for /proc sampling).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends a signal by name (`STOP` hangs the process as a stalled machine would, `CONT`
    /// resumes it), through the system's `kill` so no unsafe code is needed.
    pub fn signal(&self, name: &str) -> std::io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other("process already reaped"))?;
        let s = Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()?;
        if s.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill -s {name} {pid}: {s}")))
        }
    }

    /// The exit status if it has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Arguments for `heatmesh master` on the given ports and data directory.
pub fn master_args(grpc: SocketAddr, metrics: SocketAddr, data: &Path) -> Vec<String> {
    vec![
        "master".into(),
        "--listen".into(),
        grpc.to_string(),
        "--metrics-listen".into(),
        metrics.to_string(),
        "--data-dir".into(),
        data.display().to_string(),
        "--allow-fault-injection".into(),
    ]
}

/// Arguments for `heatmesh node` preferring `plants`, attaching to `master`.
pub fn node_args(
    id: &str,
    plants: &[&str],
    master: SocketAddr,
    listen: SocketAddr,
    cookie_file: &Path,
) -> Vec<String> {
    let mut a = vec![
        "node".into(),
        "--id".into(),
        id.into(),
        "--master".into(),
        master.to_string(),
        "--listen".into(),
        listen.to_string(),
        "--cookie-file".into(),
        cookie_file.display().to_string(),
        "--reconnect-max".into(),
        "500ms".into(),
        // The node's reading buffer goes beside the cookie, in the caller's temporary
        // directory, and survives the node's restarts there.
        "--data-dir".into(),
        beside(cookie_file, &format!("node-{id}")),
        // Its record of what it acquired, for loss checks.
        "--acquired-log".into(),
        beside(cookie_file, &format!("acquired-{id}")),
    ];
    for p in plants {
        a.push("--plant".into());
        a.push((*p).into());
    }
    a
}

fn beside(file: &Path, name: &str) -> String {
    file.parent()
        .unwrap_or(Path::new("."))
        .join(name)
        .display()
        .to_string()
}

/// Loopback address with a free port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A path under `dir`.
pub fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
