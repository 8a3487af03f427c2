//! Private PostgreSQL, Redis and RabbitMQ instances a fault test starts on ports of its own, so
//! it can crash and restart them without disturbing the shared services other tests use.
//!
//! PostgreSQL and RabbitMQ refuse to run as root: when the tests run as root, their commands
//! run as the `postgres` and `rabbitmq` users (the data directories are handed to them). Every
//! instance is stopped and its directory removed on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ingest_testkit::random_name;

/// A port nobody listens on right now (the kernel's choice; released before use).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("the kernel should hand out a free port")
        .port()
}

/// Whether something accepts TCP connections on `port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Blocks until `port` accepts connections (or is closed, when `open` is false).
pub fn wait_port(what: &str, port: u16, open: bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while port_open(port) != open {
        assert!(
            Instant::now() < deadline,
            "{what} did not {} port {port} within {timeout:?}",
            if open { "open" } else { "close" }
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A directory for an instance, owned by `user` when we are root.
fn instance_dir(prefix: &str, user: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(random_name(prefix));
    std::fs::create_dir_all(&dir).expect("instance directory");
    if is_root() {
        run(Command::new("chown").args([&format!("{user}:{user}"), dir.to_str().unwrap()]));
    }
    dir
}

/// Runs a command to completion, failing the test with its output when it fails.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed: {text}");
    text
}

/// A PostgreSQL 15 cluster of the test's own (fsync off: it is crashed on purpose, not the OS).
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl PrivatePostgres {
    pub fn start() -> Self {
        let dir = instance_dir("faults-pg-", "postgres");
        let pg = Self {
            port: free_port(),
            dir,
        };
        run(pg.command("initdb").args([
            "-D",
            pg.data().to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-N",
        ]));
        pg.up();
        pg
    }

    /// `postgres://` URL of database `name` (created by the binaries when missing).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Kills the server the way a crash would (`-m immediate`: no shutdown checkpoint, every
    /// session cut), so in-flight transactions roll back and recovery runs at the next start.
    pub fn crash(&self) {
        run(self.pg_ctl().args(["-m", "immediate", "-w", "stop"]));
        wait_port("PostgreSQL", self.port, false, Duration::from_secs(10));
    }

    /// Starts the (stopped) server again.
    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        run(self.pg_ctl().args([
            "-o",
            &options,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "start",
        ]));
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_ctl(&self) -> Command {
        let mut command = self.command("pg_ctl");
        command.args(["-D", self.data().to_str().unwrap()]);
        command
    }

    fn command(&self, tool: &str) -> Command {
        let program = format!("{PG_BIN}/{tool}");
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", &program]);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl()
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis server of the test's own, as a child process (nothing saved to disk).
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.up();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server on its port.
    pub fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server should start");
        self.child = Some(child);
        wait_port("Redis", self.port, true, Duration::from_secs(10));
    }

    /// SIGKILLs the server: every connection drops, every key is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_port("Redis", self.port, false, Duration::from_secs(10));
    }

    /// Calls of scripts (EVAL and EVALSHA) since the server started, from `INFO commandstats`.
    pub fn script_calls(&self) -> u64 {
        let stats = run(Command::new("redis-cli").args([
            "-p",
            &self.port.to_string(),
            "INFO",
            "commandstats",
        ]));
        stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A RabbitMQ node of the test's own with the stream plugin, on its own ports and node name.
pub struct PrivateRabbit {
    pub stream_port: u16,
    node: String,
    dir: PathBuf,
    amqp_port: u16,
    dist_port: u16,
    child: Option<Child>,
}

impl PrivateRabbit {
    pub fn start() -> Self {
        let dir = instance_dir("faults-rabbit-", "rabbitmq");
        let mut rabbit = Self {
            stream_port: free_port(),
            node: format!("{}@localhost", random_name("rabbit-faults-")),
            dir,
            amqp_port: free_port(),
            dist_port: free_port(),
            child: None,
        };
        let config = format!(
            "listeners.tcp.local = 127.0.0.1:{}\nstream.listeners.tcp.1 = 127.0.0.1:{}\n\
             loopback_users = none\n",
            rabbit.amqp_port, rabbit.stream_port
        );
        write_owned(&rabbit.dir.join("rabbitmq.conf"), &config);
        write_owned(&rabbit.dir.join("enabled_plugins"), "[rabbitmq_stream].\n");
        rabbit.up();
        rabbit
    }

    /// `rabbitmq-stream://` URL of the node.
    pub fn url(&self) -> String {
        format!(
            "rabbitmq-stream://guest:guest@127.0.0.1:{}/%2f",
            self.stream_port
        )
    }

    /// Starts the node (its streams survive from the previous run in its directory).
    pub fn up(&mut self) {
        let log = std::fs::File::create(self.dir.join("console.log")).expect("console log");
        let d = |name: &str| self.dir.join(name).to_str().unwrap().to_owned();
        let child = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_PID_FILE", d("pid"))
            .stdout(log.try_clone().expect("console log"))
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server should start");
        self.child = Some(child);
        wait_port(
            "RabbitMQ's stream listener",
            self.stream_port,
            true,
            Duration::from_secs(90),
        );
    }

    /// SIGKILLs the node's Erlang VM, the way a crash would: connections drop at once and
    /// nothing is flushed or closed in order.
    pub fn crash(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).expect("the node's pid file");
        run(Command::new("kill").args(["-KILL", pid.trim()]));
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        wait_port("RabbitMQ", self.stream_port, false, Duration::from_secs(30));
    }

    /// Stops the node (all connections close) and waits until it is gone.
    pub fn stop(&mut self) {
        run(Command::new("rabbitmqctl").args(["-n", &self.node, "stop"]));
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        wait_port("RabbitMQ", self.stream_port, false, Duration::from_secs(30));
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = Command::new("rabbitmqctl")
                .args(["-n", &self.node, "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if let Some(mut child) = self.child.take() {
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "fault test failed: RabbitMQ's logs are in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes a file the instance's user can read (the directory is theirs when we are root).
fn write_owned(path: &Path, text: &str) {
    std::fs::write(path, text).expect("instance file");
    if is_root() {
        run(Command::new("chown").args(["rabbitmq:rabbitmq", path.to_str().unwrap()]));
    }
}
