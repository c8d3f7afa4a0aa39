//! Installer tests on temporary directories standing in for the host mounts.

use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

struct Host {
    _root: tempfile::TempDir,
    installer: Installer,
    conf_dir: PathBuf,
    bin_dir: PathBuf,
    token: PathBuf,
}

fn host() -> Host {
    host_with_resync(Duration::from_millis(200))
}

fn host_with_resync(resync: Duration) -> Host {
    let root = tempfile::tempdir().unwrap();
    let conf_dir = root.path().join("etc/cni/net.d");
    let bin_dir = root.path().join("opt/cni/bin");
    let sa = root.path().join("sa");
    for dir in [&conf_dir, &bin_dir, &sa] {
        fs::create_dir_all(dir).unwrap();
    }
    let plugin = root.path().join("outrigger-cni-image-copy");
    fs::write(&plugin, b"\x7fELF plugin binary").unwrap();
    fs::write(sa.join("token"), "token-1").unwrap();
    fs::write(sa.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let settings = InstallerSettings {
        plugin_source: plugin,
        cni_bin_dir: bin_dir.clone(),
        cni_conf_dir: conf_dir.clone(),
        host_cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
        kubeconfig: KubeconfigSource {
            token_path: sa.join("token"),
            ca_path: sa.join("ca.crt"),
            server: "https://10.96.0.1:443".into(),
        },
        exclude_namespaces: vec!["kube-system".into()],
        log_level: "info".into(),
        log_file: None,
        installer_pods: InstallerPods::default(),
        resync,
    };
    Host {
        installer: Installer::new(settings),
        conf_dir,
        bin_dir,
        token: sa.join("token"),
        _root: root,
    }
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

const CALICO: &str = r#"{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[{"type":"calico","ipam":{"type":"calico-ipam"}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

#[test]
fn entry_points_at_the_host_kubeconfig() {
    let h = host();
    let entry = h.installer.entry();
    assert_eq!(entry["type"], "outrigger-cni");
    assert_eq!(
        entry["kubeconfig"],
        "/etc/cni/net.d/outrigger-cni-kubeconfig"
    );
    assert_eq!(entry["exclude_namespaces"], json!(["kube-system"]));
    assert_eq!(entry.get("log_file"), None);
    // The plugin's own parser accepts what the installer writes.
    let mut conf = entry.clone();
    conf["cniVersion"] = json!("1.0.0");
    let parsed = crate::config::PluginConfig::parse(conf.to_string().as_bytes()).unwrap();
    assert_eq!(
        parsed.kubeconfig,
        Some(PathBuf::from("/etc/cni/net.d/outrigger-cni-kubeconfig"))
    );
    assert_eq!(parsed.installer_pods, InstallerPods::default());
}

#[test]
fn bridge_conf_is_converted_and_chained() {
    let h = host();
    let bridge = json!({"cniVersion": "0.4.0", "name": "bridge", "type": "bridge", "bridge": "cni0",
                        "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}});
    fs::write(h.conf_dir.join("10-bridge.conf"), bridge.to_string()).unwrap();
    let state = h.installer.reconcile_chain().unwrap();
    let list_path = h.conf_dir.join("10-bridge.conflist");
    assert_eq!(state, ChainState::Inserted(list_path.clone()));
    assert!(!h.conf_dir.join("10-bridge.conf").exists());
    let list = read_json(&list_path);
    assert_eq!(list["plugins"], json!([bridge, h.installer.entry()]));
    assert_eq!(list["cniVersion"], "0.4.0");
    assert_eq!(
        h.installer.reconcile_chain().unwrap(),
        ChainState::Correct(list_path)
    );
}

#[test]
fn conflist_keeps_its_mode_and_gains_our_entry_once() {
    let h = host();
    let path = h.conf_dir.join("10-calico.conflist");
    fs::write(&path, CALICO).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        h.installer.reconcile_chain().unwrap(),
        ChainState::Inserted(path.clone())
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = fs::read(&path).unwrap();
    assert_eq!(
        h.installer.reconcile_chain().unwrap(),
        ChainState::Correct(path.clone())
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "a correct chain is not rewritten"
    );
    let list = read_json(&path);
    let mut expected: Value = serde_json::from_str(CALICO).unwrap();
    expected["plugins"]
        .as_array_mut()
        .unwrap()
        .push(h.installer.entry());
    assert_eq!(list, expected);
}

#[test]
fn no_primary_means_waiting_and_not_ready() {
    let h = host();
    h.installer.install_binary().unwrap();
    h.installer.sync_kubeconfig().unwrap();
    assert_eq!(
        h.installer.reconcile_chain().unwrap(),
        ChainState::NoPrimary
    );
    assert!(!h.installer.is_ready());
    fs::write(h.conf_dir.join("10-calico.conflist"), CALICO).unwrap();
    assert!(!h.installer.is_ready());
    h.installer.reconcile_chain().unwrap();
    assert!(h.installer.is_ready());
}

#[test]
fn uninstall_removes_everything_of_ours_and_nothing_else() {
    let h = host();
    let path = h.conf_dir.join("10-calico.conflist");
    fs::write(&path, CALICO).unwrap();
    h.installer.install_binary().unwrap();
    h.installer.sync_kubeconfig().unwrap();
    h.installer.reconcile_chain().unwrap();
    assert!(h.bin_dir.join("outrigger-cni").is_file());
    h.installer.uninstall().unwrap();
    assert_eq!(
        read_json(&path),
        serde_json::from_str::<Value>(CALICO).unwrap()
    );
    assert!(!h.bin_dir.join("outrigger-cni").exists());
    assert!(!h.conf_dir.join("outrigger-cni-kubeconfig").exists());
    // A second uninstall finds nothing to do and succeeds.
    h.installer.uninstall().unwrap();
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

type Running = (
    Arc<AtomicBool>,
    Metrics,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), InstallError>>,
);

/// Starts the agent: its readiness flag and metrics, the sender that stops it, and its task.
fn start(installer: &Arc<Installer>) -> Running {
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let (installer, ready, metrics) = (installer.clone(), ready.clone(), metrics.clone());
        tokio::spawn(async move {
            installer
                .run(ready, metrics, async { stopped.await.unwrap_or(()) })
                .await
        })
    };
    (ready, metrics, stop, task)
}

#[tokio::test]
async fn agent_waits_repairs_rotates_and_cleans_up() {
    let h = host();
    let installer = Arc::new(h.installer);
    let (ready, metrics, stop, agent) = start(&installer);
    let path = h.conf_dir.join("10-calico.conflist");
    let kubeconfig = h.conf_dir.join("outrigger-cni-kubeconfig");
    wait_for("binary and kubeconfig", || {
        h.bin_dir.join("outrigger-cni").is_file() && kubeconfig.is_file()
    })
    .await;
    assert!(
        !ready.load(Ordering::SeqCst),
        "ready without a primary configuration"
    );

    // The network plugin starts and writes its configuration.
    fs::write(&path, CALICO).unwrap();
    let entry = installer.entry();
    wait_for("entry inserted", || {
        conflist::chain_is_correct(&read_json(&path), &entry)
    })
    .await;
    wait_for("ready", || ready.load(Ordering::SeqCst)).await;

    // The network plugin rewrites its file, dropping our entry: it comes back.
    fs::write(&path, CALICO).unwrap();
    wait_for("entry re-inserted", || {
        conflist::chain_is_correct(&read_json(&path), &entry)
    })
    .await;
    wait_for("second insertion counted", || {
        metrics.chain_insertions.get() >= 2
    })
    .await;

    // The token rotates: the kubeconfig follows.
    fs::write(&h.token, "token-2").unwrap();
    wait_for("kubeconfig rewritten", || {
        fs::read_to_string(&kubeconfig).unwrap().contains("token-2")
    })
    .await;

    stop.send(()).unwrap();
    agent.await.unwrap().unwrap();
    assert!(!ready.load(Ordering::SeqCst));
    assert_eq!(
        read_json(&path),
        serde_json::from_str::<Value>(CALICO).unwrap()
    );
    assert!(!kubeconfig.exists());
    assert!(!h.bin_dir.join("outrigger-cni").exists());
}

#[tokio::test]
async fn idle_agent_does_not_wake_on_its_own_reads() {
    let h = host_with_resync(Duration::from_secs(3600));
    fs::write(h.conf_dir.join("10-calico.conflist"), CALICO).unwrap();
    let installer = Arc::new(h.installer);
    let (ready, metrics, stop, agent) = start(&installer);
    wait_for("ready", || ready.load(Ordering::SeqCst)).await;
    // Let the events of the insertion itself settle, then watch an idle second.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = metrics.reconcile_passes.get();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = metrics.reconcile_passes.get() - before;
    assert_eq!(
        idle, 0,
        "passes in one idle second (each pass reads the directory)"
    );

    // A real change still wakes it.
    fs::write(h.conf_dir.join("10-calico.conflist"), CALICO).unwrap();
    wait_for("a pass after a write", || {
        metrics.reconcile_passes.get() > before
    })
    .await;
    stop.send(()).unwrap();
    agent.await.unwrap().unwrap();
}

/// A bridge `.conf` as a node's provisioning wrote it: its own key order, spacing and mode.
const BRIDGE_CONF: &str = "{\n    \"cniVersion\": \"0.4.0\",\n    \"name\": \"bridge\",\n    \"type\": \"bridge\",\n    \"bridge\": \"cni0\",\n    \"isGateway\": true,\n    \"ipam\": {\"type\": \"host-local\", \"subnet\": \"10.22.0.0/16\"}\n}\n";

fn installed(h: &Host) {
    h.installer.install_binary().unwrap();
    h.installer.sync_kubeconfig().unwrap();
    h.installer.reconcile_chain().unwrap();
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn uninstall_puts_a_primary_conf_back_as_the_conf_it_was() {
    let h = host();
    let conf = h.conf_dir.join("10-bridge.conf");
    fs::write(&conf, BRIDGE_CONF).unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o600)).unwrap();
    installed(&h);
    assert!(!conf.exists(), "converted while installed");
    assert!(h.conf_dir.join("10-bridge.conflist").is_file());
    h.installer.uninstall().unwrap();
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        BRIDGE_CONF,
        "byte for byte"
    );
    assert_eq!(
        fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        names_in(&h.conf_dir),
        ["10-bridge.conf"],
        "nothing of ours is left"
    );
}

#[test]
fn uninstall_puts_a_conflist_back_byte_for_byte() {
    let h = host();
    // Calico's list, tab-indented with its own key order (our rewrite is pretty-printed).
    let pretty: Value = serde_json::from_str(CALICO).unwrap();
    let text = format!(
        "{}\n",
        serde_json::to_string_pretty(&pretty)
            .unwrap()
            .replace("  ", "\t")
    );
    let path = h.conf_dir.join("10-calico.conflist");
    fs::write(&path, &text).unwrap();
    installed(&h);
    assert_ne!(fs::read_to_string(&path).unwrap(), text);
    h.installer.uninstall().unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    assert_eq!(names_in(&h.conf_dir), ["10-calico.conflist"]);
}

#[test]
fn a_configuration_rewritten_by_the_network_plugin_is_kept_as_it_now_is() {
    let h = host();
    let path = h.conf_dir.join("10-calico.conflist");
    fs::write(&path, CALICO).unwrap();
    installed(&h);
    // Calico rewrites its list (new MTU) and drops our entry; we chain again; uninstall then
    // restores Calico's new bytes, not the first ones.
    let newer = CALICO.replace("\"ipam\"", "\"mtu\":1440,\"ipam\"");
    fs::write(&path, &newer).unwrap();
    h.installer.reconcile_chain().unwrap();
    h.installer.uninstall().unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), newer);

    // Changed while our entry was in it (kept our entry): its version wins, our entry goes.
    fs::write(&path, CALICO).unwrap();
    installed(&h);
    let mut edited = read_json(&path);
    edited["cniVersion"] = json!("1.0.0");
    fs::write(&path, edited.to_string()).unwrap();
    h.installer.uninstall().unwrap();
    let mut expected: Value = serde_json::from_str(CALICO).unwrap();
    expected["cniVersion"] = json!("1.0.0");
    assert_eq!(read_json(&path), expected);
    assert_eq!(names_in(&h.conf_dir), ["10-calico.conflist"]);
}
