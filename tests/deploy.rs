//! The deployment files cannot drift from the binary: no Docker engine runs
//! here, so this test parses them and checks every flag, setting, port, probe
//! and metric they name against `trimatch --help` and the metrics a running
//! job exposes.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use rdkafka::mocking::MockCluster;
use serde::Deserialize;
use serde_yaml::Value;
use support::*;
use trimatch::pipeline::Pipeline;

const TRIMATCH: &str = env!("CARGO_BIN_EXE_trimatch");

fn deploy(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{}: {error}", full.display()))
}

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = deploy(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|error| panic!("{path}: {error}"))
        })
        .collect()
}

fn help(subcommand: &str) -> String {
    let output = Command::new(TRIMATCH)
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// Checks that every `--flag` in a trimatch command line is one the subcommand has.
fn check_flags(context: &str, args: &[String]) {
    let Some(subcommand) = args.first() else {
        return;
    };
    let help = help(subcommand);
    for flag in args.iter().filter(|arg| arg.starts_with("--")) {
        let name = flag.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{name} "))
                || help.contains(&format!("{name}\n"))
                || help.contains(&format!("{name} <")),
            "{context}: `trimatch {subcommand}` has no flag {name}"
        );
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The metric names a running job exposes (histograms with their series suffixes).
fn exposed_metrics() -> BTreeSet<String> {
    let mock = MockCluster::new(1).unwrap();
    create_input_topics_on_mock(&mock);
    let pipeline =
        Pipeline::start(pipeline_config(source_config(&mock.bootstrap_servers()), 1)).unwrap();
    let handle = pipeline.handle();
    wait_for(
        "a complete time",
        std::time::Duration::from_secs(10),
        || handle.newest_complete().is_some(),
    );
    let text = trimatch::serve::metrics::Metrics::new().render(&handle);
    pipeline.shutdown().unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

fn create_input_topics_on_mock(
    mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) {
    for kind in trimatch_dataflows::model::DocumentKind::ALL {
        mock.create_topic(kind.default_topic(), 1, 1).unwrap();
    }
}

#[test]
fn dockerfile_builds_in_stages_and_runs_as_non_root() {
    let dockerfile = deploy("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "a multi-stage build");
    let user = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "runs as non-root, not {user}"
    );
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/trimatch\"]"));
    let expose: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(expose, vec!["50051", "9464"]);
    // The CMD instruction, with its continuation lines joined.
    let joined = dockerfile.replace("\\\n", " ");
    let cmd = joined
        .lines()
        .find_map(|line| line.strip_prefix("CMD "))
        .expect("a CMD");
    let args: Vec<String> = serde_json::from_str(cmd).unwrap();
    check_flags("Dockerfile CMD", &args);
    for flag in ["--tls-cert", "--auth-file", "--metrics-token-file"] {
        assert!(
            args.iter().any(|arg| arg == flag),
            "the image serves with {flag}"
        );
    }
    // Cargo needs every workspace member's manifest to build any of them.
    let manifest: toml::Table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let members: Vec<&str> = manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member.as_str().unwrap())
        .collect();
    let sources = ["Cargo.toml", "Cargo.lock", "src", "schemas"];
    for source in sources.into_iter().chain(members) {
        let copied = dockerfile
            .lines()
            .filter(|line| line.starts_with("COPY "))
            .any(|line| line.split_whitespace().any(|word| word == source));
        assert!(copied, "the build copies {source}");
    }
}

#[test]
fn compose_and_kubernetes_name_only_flags_settings_and_ports_that_exist() {
    // docker-compose: every trimatch command's flags exist; Prometheus scrapes the metrics port.
    let compose = &yaml_documents("docker-compose.yml")[0];
    let services = compose["services"].as_mapping().unwrap();
    for required in ["kafka", "trimatch", "generator", "prometheus", "grafana"] {
        assert!(services.contains_key(required), "compose has {required}");
    }
    assert_eq!(
        compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "broker,controller",
        "KRaft mode"
    );
    for name in ["trimatch", "generator"] {
        let command = strings(&compose["services"][name]["command"]);
        assert_eq!(
            compose["services"][name]["build"]["dockerfile"],
            "deploy/Dockerfile"
        );
        check_flags(&format!("compose {name}"), &command);
    }
    let serve = strings(&compose["services"]["trimatch"]["command"]);
    let metrics_port = serve[serve
        .iter()
        .position(|arg| arg == "--metrics-addr")
        .unwrap()
        + 1]
    .rsplit(':')
    .next()
    .unwrap()
    .to_string();
    let prometheus = &yaml_documents("prometheus.yml")[0];
    let targets = strings(&prometheus["scrape_configs"][0]["static_configs"][0]["targets"]);
    assert_eq!(targets, vec![format!("trimatch:{metrics_port}")]);

    // Kubernetes: the ConfigMap's settings are serve's; probes and ports agree with them.
    let configmap = &yaml_documents("k8s/configmap.yaml")[0];
    let toml_text = configmap["data"]["trimatch.toml"].as_str().unwrap();
    let settings: toml::Table = toml_text.parse().unwrap();
    let serve_help = help("serve");
    for key in settings.keys().filter(|key| *key != "kafka") {
        let variable = format!("TRIMATCH_{}", key.to_uppercase());
        assert!(
            serve_help.contains(&format!("[env: {variable}=")),
            "the ConfigMap sets {key}, which serve does not read ({variable})"
        );
    }
    let port_of = |key: &str| {
        settings[key]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    let statefulset = &yaml_documents("k8s/statefulset.yaml")[0];
    assert_eq!(statefulset["kind"], "StatefulSet");
    let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
    // The container runs a shell that derives the hostfile and peers, then execs trimatch.
    assert_eq!(strings(&container["command"]), vec!["/bin/sh", "-c"]);
    let script = strings(&container["args"]).concat();
    let exec = script
        .lines()
        .find_map(|line| line.trim().strip_prefix("exec /usr/local/bin/trimatch "))
        .expect("the script execs trimatch");
    let exec_args: Vec<String> = exec
        .split_whitespace()
        .map(|word| word.trim_matches('"').to_string())
        .collect();
    check_flags("StatefulSet", &exec_args);
    for flag in ["--config", "--process-id", "--hostfile", "--flight-peers"] {
        assert!(
            exec_args.iter().any(|arg| arg == flag),
            "the StatefulSet passes {flag}"
        );
    }
    let processes = container["env"][0]["value"].as_str().unwrap();
    assert_eq!(container["env"][0]["name"], "TRIMATCH_PROCESSES");
    assert!(serve_help.contains("[env: TRIMATCH_PROCESSES="));
    assert_eq!(
        processes.parse::<i64>().unwrap(),
        statefulset["spec"]["replicas"].as_i64().unwrap()
    );
    assert_eq!(statefulset["spec"]["podManagementPolicy"], "Parallel");
    let ports: Vec<(String, i64)> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|port| {
            (
                port["name"].as_str().unwrap().to_string(),
                port["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(ports.contains(&("flight".to_string(), port_of("flight_addr"))));
    assert!(ports.contains(&("metrics".to_string(), port_of("metrics_addr"))));
    // The probes are `trimatch health` over loopback, at the metrics port.
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let command = strings(&container[probe]["exec"]["command"]);
        assert_eq!(command[0], "/usr/local/bin/trimatch");
        check_flags(probe, &command[1..]);
        let url = &command[command.iter().position(|arg| arg == "--url").unwrap() + 1];
        assert_eq!(
            url,
            &format!("https://localhost:{}{path}", port_of("metrics_addr")),
            "{probe}"
        );
    }
    // The state directory is on the pod's persistent volume.
    let state_dir = settings["state_dir"].as_str().unwrap();
    let state_mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|mount| state_dir.starts_with(mount["mountPath"].as_str().unwrap_or("-")))
        .unwrap_or_else(|| panic!("nothing is mounted at the state directory {state_dir}"));
    assert!(
        statefulset["spec"]["volumeClaimTemplates"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|claim| claim["metadata"]["name"] == state_mount["name"]),
        "the state directory's volume is a persistent volume claim"
    );
    // Every file the settings name is mounted from a Secret the manifests define.
    let secrets: Vec<Value> = yaml_documents("k8s/secret.yaml");
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    let volumes = statefulset["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    for (key, value) in &settings {
        let Some(path) = value
            .as_str()
            .filter(|path| path.starts_with("/etc/trimatch/"))
        else {
            continue;
        };
        let (directory, file) = path.rsplit_once('/').unwrap();
        let mount = mounts
            .iter()
            .find(|mount| mount["mountPath"] == directory)
            .unwrap_or_else(|| panic!("{key}: nothing is mounted at {directory}"));
        let volume = volumes
            .iter()
            .find(|volume| volume["name"] == mount["name"])
            .unwrap();
        let secret = volume["secret"]["secretName"]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {directory} is not a Secret"));
        let defined = secrets
            .iter()
            .find(|document| document["metadata"]["name"] == secret)
            .unwrap_or_else(|| panic!("secret.yaml defines {secret}"));
        assert!(
            !defined["stringData"][file].is_null(),
            "{secret} has {file} ({key})"
        );
    }
    assert_eq!(
        statefulset["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    // Timely's port is open to trimatch's own pods only; Flight and metrics to all.
    let policy = &yaml_documents("k8s/networkpolicy.yaml")[0];
    assert_eq!(policy["kind"], "NetworkPolicy");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        statefulset["spec"]["selector"]["matchLabels"]
    );
    let rules = policy["spec"]["ingress"].as_sequence().unwrap();
    let port_names = |rule: &Value| -> Vec<String> {
        rule["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|port| port["port"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(port_names(&rules[0]), vec!["timely"]);
    assert_eq!(
        rules[0]["from"][0]["podSelector"]["matchLabels"],
        statefulset["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(port_names(&rules[1]), vec!["flight", "metrics"]);
    assert!(
        rules[1]["from"].is_null(),
        "Flight and metrics from anywhere"
    );
    for name in ["timely", "flight", "metrics"] {
        assert!(
            ports.iter().any(|(port, _)| port == name),
            "the container names its {name} port"
        );
    }
    let services = yaml_documents("k8s/services.yaml");
    assert_eq!(
        services[0]["spec"]["clusterIP"], "None",
        "a headless Service"
    );
    assert_eq!(
        statefulset["spec"]["serviceName"],
        services[0]["metadata"]["name"]
    );
    assert_eq!(services[1]["spec"]["ports"][0]["targetPort"], "flight");
}

#[test]
fn the_dashboard_uses_only_metrics_that_exist() {
    let exposed = exposed_metrics();
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy("grafana/dashboards/trimatch.json")).unwrap();
    let names = regex::Regex::new(r"trimatch_[a-z_]+").unwrap();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            for name in names.find_iter(target["expr"].as_str().unwrap()) {
                used.insert(name.as_str().to_string());
            }
        }
    }
    assert!(
        used.len() >= 10,
        "the dashboard covers the metrics: {used:?}"
    );
    let missing: Vec<&String> = used.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "the dashboard names metrics trimatch does not expose: {missing:?}"
    );
    let provisioning = &yaml_documents("grafana/provisioning/dashboards/trimatch.yml")[0];
    assert_eq!(
        provisioning["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
}

/// Runs `deploy/dev-secrets.sh` (what compose's init services run) into `dir`.
fn dev_secrets(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/dev-secrets.sh");
    for mode in ["certs", "tokens"] {
        let output = Command::new("sh")
            .arg(&script)
            .args([mode, dir.to_str().unwrap()])
            .env("TRIMATCH", TRIMATCH)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "dev-secrets.sh {mode}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A running `trimatch serve` with `args` answers over TLS, refuses a call
/// without a token, and scopes the analyst token of dev-secrets.sh.
fn check_secured_serve(
    context: &str,
    args: &[String],
    flight: &str,
    metrics: &str,
    secrets: &Path,
) {
    let _serve = KillOnDrop::new(
        Command::new(TRIMATCH)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ca = secrets.join("ca.pem");
    let port = |addr: &str| addr.rsplit(':').next().unwrap().to_string();
    wait_for(
        &format!("{context} ready over TLS"),
        std::time::Duration::from_secs(60),
        || {
            Command::new(TRIMATCH)
                .args([
                    "health",
                    "--url",
                    &format!("https://localhost:{}/readyz", port(metrics)),
                ])
                .args(["--tls-ca", ca.to_str().unwrap()])
                .output()
                .is_ok_and(|output| output.status.success())
        },
    );
    let query = |token: Option<&Path>| {
        let mut command = Command::new(TRIMATCH);
        command
            .args(["query", "invoice_matches", "--format", "csv"])
            .args([
                "--flight-addr",
                &format!("https://localhost:{}", port(flight)),
            ])
            .args(["--tls-ca", ca.to_str().unwrap()]);
        if let Some(token) = token {
            command.args(["--token", std::fs::read_to_string(token).unwrap().trim()]);
        }
        command.output().unwrap()
    };
    let refused = query(None);
    assert!(
        !refused.status.success(),
        "{context}: a call without a token is refused"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("requires authentication"),
        "{context}"
    );
    let analyst = query(Some(&secrets.join("analyst.token")));
    assert!(
        analyst.status.success(),
        "{context}: {}",
        String::from_utf8_lossy(&analyst.stderr)
    );
    let text = String::from_utf8(analyst.stdout).unwrap();
    let tenants: BTreeSet<&str> = text
        .lines()
        .skip(1)
        .filter_map(|line| line.split(',').next())
        .collect();
    assert_eq!(
        tenants,
        BTreeSet::from(["tenant-000", "tenant-001"]),
        "{context}: the analyst's tenants only"
    );
    let admin = query(Some(&secrets.join("admin.token")));
    let rows = String::from_utf8(admin.stdout).unwrap().lines().count();
    assert!(
        rows > text.lines().count(),
        "{context}: the admin reads every tenant"
    );
}

#[test]
fn the_compose_and_kubernetes_settings_run_with_tls_and_authentication_on() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [1, 1, 1, 1, 1, 1]);
    let messages: Vec<_> = trimatch_workload::Workload::new(trimatch_workload::WorkloadConfig {
        seed: 161,
        tenants: 4,
        ..trimatch_workload::WorkloadConfig::default()
    })
    .take(600)
    .collect();
    produce(&broker.address, &messages);
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    dev_secrets(&secrets);

    // compose: its serve command, with the volumes' paths, the broker and free
    // ports swapped in; still on every interface.
    let compose = &yaml_documents("docker-compose.yml")[0];
    let compose_state = dir.path().join("compose-state");
    let (flight, metrics) = (free_port(), free_port());
    let args: Vec<String> = strings(&compose["services"]["trimatch"]["command"])
        .into_iter()
        .map(|arg| {
            // The state volume too: `/state` on the test host is not ours.
            (if arg == "/state" {
                compose_state.to_str().unwrap().to_string()
            } else {
                arg
            })
            .replace("/secrets", secrets.to_str().unwrap())
            .replace("kafka:9092", &broker.address)
            .replace("0.0.0.0:50051", &format!("0.0.0.0:{flight}"))
            .replace("0.0.0.0:9464", &format!("0.0.0.0:{metrics}"))
        })
        .collect();
    check_secured_serve(
        "compose",
        &args,
        &format!("0.0.0.0:{flight}"),
        &format!("0.0.0.0:{metrics}"),
        &secrets,
    );

    // Kubernetes: the ConfigMap's file, with the Secrets' files from dev-secrets.sh.
    let configmap = &yaml_documents("k8s/configmap.yaml")[0];
    let (tls, auth) = (dir.path().join("tls"), dir.path().join("auth"));
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::create_dir_all(&auth).unwrap();
    for (from, to) in [
        ("server.pem", tls.join("tls.crt")),
        ("server.key", tls.join("tls.key")),
        ("ca.pem", tls.join("ca.crt")),
        ("auth.toml", auth.join("auth.toml")),
        ("metrics.token", auth.join("metrics.token")),
        ("metrics.token", auth.join("cluster.token")),
    ] {
        std::fs::copy(secrets.join(from), to).unwrap();
    }
    let (flight, metrics) = (free_port(), free_port());
    let text = configmap["data"]["trimatch.toml"]
        .as_str()
        .unwrap()
        .replace("/etc/trimatch/tls", tls.to_str().unwrap())
        .replace("/etc/trimatch/secrets", auth.to_str().unwrap())
        .replace(
            "/var/lib/trimatch",
            dir.path().join("state").to_str().unwrap(),
        )
        .replace("kafka-bootstrap.kafka.svc:9092", &broker.address)
        .replace("0.0.0.0:50051", &format!("0.0.0.0:{flight}"))
        .replace("0.0.0.0:9464", &format!("0.0.0.0:{metrics}"));
    let config = dir.path().join("trimatch.toml");
    std::fs::write(&config, text).unwrap();
    let args: Vec<String> = ["serve", "--config", config.to_str().unwrap()]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
    check_secured_serve(
        "kubernetes",
        &args,
        &format!("0.0.0.0:{flight}"),
        &format!("0.0.0.0:{metrics}"),
        &secrets,
    );
}
