//! The network's identity with the commands a person types: a CA, keys
//! made where the node runs, certificates, verification, revocation — and
//! nodes that refuse a revoked neighbour.

use std::process::{Command, Output};

use pathvm_tests::*;

fn pathvm(args: &[&str]) -> Output {
    Command::new(pathvm_bin()).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_ca_issues_verifies_and_revokes_certificates() {
    let dir = TempDir::new();
    let (ca, keys) = (dir.0.join("ca"), dir.0.join("keys"));
    let (ca_s, keys_s) = (ca.to_str().unwrap(), keys.to_str().unwrap());
    ok(&pathvm(&["ca", "init", "--dir", ca_s, "--name", "lab"]));
    let again = pathvm(&["ca", "init", "--dir", ca_s]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
    for (name, id) in [("a", "1"), ("b", "2")] {
        ok(&pathvm(&["cert", "keygen", "--dir", keys_s, "--name", name]));
        let public = keys.join(format!("{name}.pub.toml"));
        let out = keys.join(format!("{name}.crt.toml"));
        ok(&pathvm(&[
            "cert",
            "issue",
            "--ca",
            ca_s,
            "--pub",
            public.to_str().unwrap(),
            "--node",
            id,
            "--name",
            name,
            "--addr",
            "10.0.0.1",
            "--out",
            out.to_str().unwrap(),
        ]));
    }
    let key = std::fs::read_to_string(keys.join("a.key")).unwrap();
    let cert = std::fs::read_to_string(keys.join("a.crt.toml")).unwrap();
    assert!(!cert.contains(key.lines().next().unwrap().split('"').nth(1).unwrap()), "a secret in a certificate");
    let (ca_toml, crl) = (ca.join("ca.toml"), ca.join("crl.toml"));
    let verify = |name: &str| {
        pathvm(&[
            "cert",
            "verify",
            "--ca",
            ca_toml.to_str().unwrap(),
            "--crl",
            crl.to_str().unwrap(),
            keys.join(format!("{name}.crt.toml")).to_str().unwrap(),
        ])
    };
    assert!(ok(&verify("b")).contains("valid: node 2"));
    ok(&pathvm(&["ca", "revoke", "--dir", ca_s, keys.join("b.crt.toml").to_str().unwrap()]));
    let out = verify("b");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    assert_eq!(verify("a").status.code(), Some(0), "only b is revoked");
    // A certificate edited after signing (another node id) fails.
    let forged = keys.join("f.crt.toml");
    std::fs::write(&forged, cert.replace("node = 1", "node = 9")).unwrap();
    let out = pathvm(&["cert", "verify", "--ca", ca_toml.to_str().unwrap(), forged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("signature"));
}

#[test]
fn every_neighbour_refuses_a_revoked_node() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    // topo up made the identity with the same library calls as the commands.
    let id = topo.node_config("a").parent().unwrap().join("identity");
    // No link key is written anywhere: both ends agree it from their
    // certificates, and get the same one.
    let raw: toml::Value = toml::from_str(&std::fs::read_to_string(topo.node_config("b")).unwrap()).unwrap();
    assert!(raw["port"].as_array().unwrap().iter().all(|p| p.get("key").is_none()), "a link key in b's config");
    let (a, b) = (topo.node_file("a"), topo.node_file("b"));
    let (ab, ba) = (a.port.iter().find(|p| p.peer == 2).unwrap(), b.port.iter().find(|p| p.peer == 1).unwrap());
    assert!(ab.key.len() == 64 && ab.key == ba.key, "both ends of a-b agree on its key");
    let bc = b.port.iter().find(|p| p.peer == 3).unwrap();
    assert_ne!(bc.key, ba.key, "each link has its own");
    let c_cert = id.join("members/c.crt.toml");
    ok(&pathvm(&["ca", "revoke", "--dir", id.join("ca").to_str().unwrap(), c_cert.to_str().unwrap()]));
    let dir = TempDir::new();
    // C itself does not start: its own certificate is revoked.
    let mut cmd = topo.node("c", &dir.0.join("c.json"));
    let out = cmd.stdin(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("revoked"), "revoked c started: {err}");
    // B starts without its port to C, and says so.
    let b = topo.start_node("b", 2, &dir.0.join("b.json"));
    let up = &b.events().of("node_up")[0];
    assert_eq!(up["ports"], 1, "{up}");
    let refused = up["refused_ports"][0].as_str().unwrap_or_default();
    assert!(refused.contains("neighbour 3's certificate is refused"), "{up}");
}

#[test]
fn a_revocation_takes_effect_on_running_nodes_within_seconds() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let dir = TempDir::new();
    let mut c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let b = topo.start_node("b", 2, &dir.0.join("b.json"));
    let body = random_bytes(256 << 10, 61);
    let port = pathvm_tests::edge::http_server(&topo.netns("c"), body.clone());
    let edge = pathvm_tests::edge::start_edge(&topo);
    let url = format!("http://c:{port}/file");
    let (code, got) = pathvm_tests::edge::curl(&topo, &url, None);
    assert_eq!((code, sha256(&got)), (Some(0), sha256(&body)), "before the revocation");

    // The CA revokes C; the operator copies the list out (here: in place).
    let id = topo.node_config("a").parent().unwrap().join("identity");
    let c_cert = id.join("members/c.crt.toml");
    ok(&pathvm(&["ca", "revoke", "--dir", id.join("ca").to_str().unwrap(), c_cert.to_str().unwrap()]));
    // B notices, starts again without its port to C.
    b.events().wait(std::time::Duration::from_secs(10), |e| pathvm_tests::events::is(e, "identity_changed"));
    let again = b.events().wait_n(2, std::time::Duration::from_secs(20), |e| pathvm_tests::events::is(e, "node_up"));
    assert_eq!(again[1]["ports"], 1, "{}", b.events().dump());
    assert!(again[1]["refused_ports"][0].as_str().unwrap_or_default().contains("neighbour 3"));
    // C itself stops: its own certificate no longer holds.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while c.child().try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < until, "revoked C still runs");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Nothing reaches C through the network any more.
    let (code, _) = pathvm_tests::edge::curl(&topo, &url, None);
    assert_eq!(code, Some(97), "a revoked node is still reached");
    drop(edge);
}

/// `host`'s config without anything about node `gone` (its links and its
/// host entry): what a config written before `gone` joined says.
fn forget(topo: &TopoGuard, host: &str, gone: i64) {
    edit_config(topo, host, |t| {
        if let Some(links) = t.get_mut("link").and_then(|l| l.as_array_mut()) {
            links.retain(|l| l["a"].as_integer() != Some(gone) && l["b"].as_integer() != Some(gone));
        }
        if let Some(hosts) = t.get_mut("host").and_then(|l| l.as_array_mut()) {
            hosts.retain(|h| h["node"].as_integer() != Some(gone));
        }
    });
}

fn edit_config(topo: &TopoGuard, host: &str, f: impl FnOnce(&mut toml::Table)) {
    let path = topo.node_config(host);
    let mut v: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(v.as_table_mut().unwrap());
    std::fs::write(&path, toml::to_string(&v).unwrap()).unwrap();
}

#[test]
fn a_member_whose_certificate_nobody_was_given_is_linked_and_routed_to_from_its_hello_and_link_state() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up_file(&workspace().join("tests/topologies/join4.toml"));
    let identity = topo.node_config("a").parent().unwrap().join("identity");
    // D's certificate stays with D: out of the members everyone reads,
    // into a directory only D's config names.
    let own = identity.join("d-own");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::rename(identity.join("members/d.crt.toml"), own.join("d.crt.toml")).unwrap();
    edit_config(&topo, "d", |t| {
        t["identity"]["cert"] = toml::Value::String("identity/d-own/d.crt.toml".into());
    });
    // A's and C's configs were written before D existed; B's has a port
    // to D (its neighbour), with no key and no certificate of D.
    forget(&topo, "a", 4);
    forget(&topo, "c", 4);
    let dir = TempDir::new();
    let c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let b = topo.start_node("b", 2, &dir.0.join("b.json"));
    let up = &b.events().of("node_up")[0];
    assert_eq!(up["ports"], 3, "B keeps its port to D, waiting for D's hello: {up}");
    let edge = pathvm_tests::edge::start_edge(&topo);
    let body = random_bytes(128 << 10, 71);
    let port = pathvm_tests::edge::http_server(&topo.netns("d"), body.clone());
    let url = format!("http://d:{port}/file");
    assert_eq!(pathvm_tests::edge::curl(&topo, &url, None).0, Some(97), "D is nobody yet");

    // D joins: it starts; nobody else's config or files change. The edge
    // learns D's name and addresses from D's certificate as B floods D's
    // link state onto the edge's link.
    let d = topo.start_node("d", 4, &dir.0.join("d.json"));
    let learned = edge
        .events
        .wait(std::time::Duration::from_secs(20), |e| pathvm_tests::events::is(e, "member_learned") && e["node"] == 4);
    assert_eq!(learned["name"], "d", "{learned}");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, got) = pathvm_tests::edge::curl(&topo, &url, None);
        if code == Some(0) {
            assert_eq!(sha256(&got), sha256(&body), "the file from D arrived intact");
            break;
        }
        assert!(std::time::Instant::now() < until, "D was never routed to: {}", edge.events.dump());
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // Requests are handed the link state the edge holds from the floods;
    // one given B's and D's (A's config knows no B-D link: only both
    // ends' advertisements make it) pulls none before its keys.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, got) = pathvm_tests::edge::curl(&topo, &url, None);
    assert_eq!((code, sha256(&got)), (Some(0), sha256(&body)));
    let up = edge.events.of("stream_up").pop().expect("a stream came up");
    assert!(up["stages"]["lsas_given"].as_u64().unwrap() >= 2, "{up}");
    assert_eq!(up["stages"]["lsa_requests"], 0, "{up}");
    drop(edge);
    for daemon in [d, b, c] {
        daemon.terminate(std::time::Duration::from_secs(10));
    }
    let node = |h: &str| -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.0.join(format!("{h}.json"))).unwrap()).unwrap();
        v["node"].clone()
    };
    let (b, c) = (node("b"), node("c"));
    assert_eq!(b["links_keyed"], 1, "B keyed its link to D from D's hello: {b}");
    assert!(b["hellos_sent"].as_u64().unwrap() > 0, "and told D who it is: {b}");
    assert_eq!(c["members_learned"], 1, "C knows D from D's advertisements alone: {c}");
    assert_eq!(b["drops"]["bad_certificate"], 0);
}
