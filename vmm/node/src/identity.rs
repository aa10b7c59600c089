//! Who belongs to a pathvm network: a network CA (Ed25519), certificates
//! it signs for each node, and the revocation list every node honours
//! (as Nebula's CA and blocklist).
//!
//! A node's keys are made on the node (`pathvm cert keygen`: the secrets
//! never leave it, only the public half goes to the CA); the CA signs a
//! certificate naming the node's id, name, addresses and public keys
//! (`pathvm cert issue`); `pathvm ca revoke` adds a certificate's serial
//! to the CA's signed revocation list. A node configuration with an
//! `[identity]` section takes its link-state signing key from its key
//! file and the link-state keys of the others from the member
//! certificates it is given, every one checked (CA signature, validity,
//! not revoked): a revoked node's advertisements are refused everywhere,
//! and a node will not start a link to a neighbour whose certificate is
//! refused. A port without a configured key gets one agreed from the two
//! ends' certified link keys ([`link_key`]: X25519 between the static
//! keys, as the static-static term of Noise KK), so no link key is ever
//! copied out of a generated file; both ends compute it alone.
//!
//! Members need not be given each other's certificates: a certificate
//! speaks for itself, so the agent carries it
//! ([`guest_agent::routing::member`]). A node sends its own in a hello on
//! each link it does not hear and in every advertisement; a neighbour with
//! no certificate of it keys the link from the hello
//! ([`guest_agent::router::hello`]), every other node takes its
//! advertisements on the certificate they carry, checked against the CA
//! and the revocation list it was booted with. Link keys only
//! authenticate hop by hop (what apps send is sealed end to end under
//! per-stream ephemeral keys), so a static agreement loses no past
//! traffic if a node's secret leaks later.
//!
//! Files are TOML. Secrets (`*.key`) are written 0600 and never logged.
//! Signatures cover a canonical byte string (a domain tag, then every
//! field length-prefixed), never the TOML text.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use guest_agent::routing::member::{MemberCert, MAX_ADDR, MAX_ADDRS, MAX_NAME, SERIAL_LEN};
use guest_agent::routing::NodeId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why an identity file or check failed.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not what it should be (with the line, for TOML errors).
    #[error("{path}: {msg}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A file that must not be overwritten exists.
    #[error("{0} exists already: pathvm never overwrites a CA or a key (remove it first if you mean to)")]
    Exists(PathBuf),
    /// A certificate does not hold.
    #[error("certificate {path} (node {node}): {why}")]
    Refused {
        /// The certificate.
        path: PathBuf,
        /// The node it names.
        node: NodeId,
        /// Why.
        why: String,
    },
}

/// The CA's public file (`ca.toml`): what every node is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaFile {
    /// The network's name.
    pub name: String,
    /// The CA's Ed25519 public key, hex.
    pub public: String,
    /// When it was made (Unix seconds).
    pub created: u64,
}

/// A node's secrets (`NAME.key`, 0600): they never leave the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Ed25519 secret that signs the node's link state, hex.
    pub signing_secret: String,
    /// X25519 secret for link handshakes, hex.
    pub link_secret: String,
}

/// A node's public keys (`NAME.pub.toml`): what goes to the CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeys {
    /// Ed25519 public key that verifies its link state, hex.
    pub signing_public: String,
    /// X25519 public key for link handshakes, hex.
    pub link_public: String,
}

/// A node certificate (`NAME.crt.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Random, names the certificate in revocation lists, hex.
    pub serial: String,
    /// The issuing CA's public key, hex.
    pub ca: String,
    /// The node id.
    pub node: NodeId,
    /// The host name.
    pub name: String,
    /// Its addresses.
    pub addrs: Vec<String>,
    /// Its keys.
    pub keys: PublicKeys,
    /// Valid from (Unix seconds).
    pub not_before: u64,
    /// Valid until (Unix seconds).
    pub not_after: u64,
    /// The CA's Ed25519 signature over the rest, hex.
    pub signature: String,
}

/// The CA's revocation list (`crl.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocations {
    /// The CA's public key, hex.
    pub ca: String,
    /// When it was signed (Unix seconds; a node takes the newest).
    pub issued: u64,
    /// Revoked certificates' serials.
    pub serials: Vec<String>,
    /// The CA's signature over the rest, hex.
    pub signature: String,
}

const CRL_DOMAIN: &[u8] = b"pathvm revocation list v1\0";

/// Now, Unix seconds.
pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn field(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

impl Certificate {
    /// Its wire form's fields, as the agent checks them (the signed bytes
    /// are defined there once: [`MemberCert::signed_message`]).
    pub fn to_member(&self) -> Result<MemberCert, String> {
        let m = MemberCert {
            node: self.node,
            serial: vmm::random::parse_hex::<SERIAL_LEN>(&self.serial, "serial")?,
            not_before: self.not_before,
            not_after: self.not_after,
            signing_public: vmm::random::parse_hex32(&self.keys.signing_public, "signing_public")?,
            link_public: vmm::random::parse_hex32(&self.keys.link_public, "link_public")?,
            name: self.name.clone(),
            addrs: self.addrs.clone(),
            signature: vmm::random::parse_hex::<64>(&self.signature, "signature").unwrap_or([0; 64]),
        };
        if !m.fits() {
            return Err(format!(
                "a name of at most {MAX_NAME} bytes and at most {MAX_ADDRS} addresses of at most {MAX_ADDR} \
                 bytes each (what travels in link state)"
            ));
        }
        Ok(m)
    }

    /// The wire form the node sends in its hellos and advertisements.
    pub fn to_wire(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.to_member()?.encode(&mut out);
        Ok(out)
    }

    /// The bytes the CA signs.
    fn signed_bytes(&self) -> Result<Vec<u8>, String> {
        let ca = vmm::random::parse_hex32(&self.ca, "the CA key")?;
        Ok(self.to_member()?.signed_message(&ca))
    }

    /// `Ok` if `ca` signed it, it is valid at `now` and `crl` does not
    /// list it; else why not.
    pub fn check(&self, ca: &CaFile, crl: Option<&Revocations>, now: u64) -> Result<(), String> {
        if self.ca != ca.public {
            return Err(format!("issued by another CA ({}…), not {}", short(&self.ca), ca.name));
        }
        verify(&ca.public, &self.signed_bytes()?, &self.signature).map_err(|e| format!("signature: {e}"))?;
        if now < self.not_before {
            return Err(format!("not valid before {} (now {now})", self.not_before));
        }
        if now > self.not_after {
            return Err(format!("expired at {} (now {now})", self.not_after));
        }
        if crl.is_some_and(|c| c.serials.contains(&self.serial)) {
            return Err(format!("revoked (serial {})", self.serial));
        }
        vmm::random::parse_hex32(&self.keys.signing_public, "signing_public")?;
        vmm::random::parse_hex32(&self.keys.link_public, "link_public")?;
        Ok(())
    }
}

impl Revocations {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = CRL_DOMAIN.to_vec();
        field(&mut out, self.ca.as_bytes());
        field(&mut out, &self.issued.to_be_bytes());
        for s in &self.serials {
            field(&mut out, s.as_bytes());
        }
        out
    }

    /// `Ok` if `ca` signed it.
    pub fn check(&self, ca: &CaFile) -> Result<(), String> {
        if self.ca != ca.public {
            return Err(format!("signed by another CA, not {}", ca.name));
        }
        verify(&ca.public, &self.signed_bytes(), &self.signature).map_err(|e| format!("signature: {e}"))
    }
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

fn verify(public_hex: &str, msg: &[u8], sig_hex: &str) -> Result<(), String> {
    let public = vmm::random::parse_hex32(public_hex, "the CA key")?;
    let key = VerifyingKey::from_bytes(&public).map_err(|_| "the CA key is no Ed25519 key".to_string())?;
    let sig = vmm::random::parse_hex::<64>(sig_hex, "a signature")?;
    key.verify(msg, &Signature::from_bytes(&sig)).map_err(|_| "does not verify".to_string())
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io { path: path.into(), source })?;
    toml::from_str(&text).map_err(|e| IdentityError::Invalid { path: path.into(), msg: e.to_string() })
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), IdentityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| IdentityError::Io { path: path.into(), source };
    let mut o = std::fs::OpenOptions::new();
    o.write(true);
    if secret {
        // A secret is never overwritten and never readable by others.
        o.create_new(true).mode(0o600);
    } else {
        o.create(true).truncate(true).mode(0o644);
    }
    let mut f = o.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => IdentityError::Exists(path.into()),
        _ => io(e),
    })?;
    f.write_all(text.as_bytes()).map_err(io)
}

fn toml_of<T: Serialize>(v: &T) -> String {
    toml::to_string(v).expect("identity files serialise")
}

/// The CA of `dir`: its public file and its signing key.
fn ca_of(dir: &Path) -> Result<(CaFile, SigningKey), IdentityError> {
    let ca: CaFile = read(&dir.join("ca.toml"))?;
    let key_path = dir.join("ca.key");
    let text =
        std::fs::read_to_string(&key_path).map_err(|source| IdentityError::Io { path: key_path.clone(), source })?;
    let secret = vmm::random::parse_hex32(text.trim(), "the CA secret")
        .map_err(|msg| IdentityError::Invalid { path: key_path.clone(), msg })?;
    let key = SigningKey::from_bytes(&secret);
    if vmm::random::hex(&key.verifying_key().to_bytes()) != ca.public {
        return Err(IdentityError::Invalid { path: key_path, msg: "does not match ca.toml's public key".into() });
    }
    Ok((ca, key))
}

/// `pathvm ca init`: a new CA in `dir` (`ca.key` 0600, `ca.toml`).
pub fn ca_init(dir: &Path, name: &str) -> Result<CaFile, IdentityError> {
    std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io { path: dir.into(), source })?;
    if dir.join("ca.toml").exists() {
        return Err(IdentityError::Exists(dir.join("ca.toml")));
    }
    let key = SigningKey::from_bytes(&vmm::random::bytes::<32>());
    write(&dir.join("ca.key"), &format!("{}\n", vmm::random::hex(&key.to_bytes())), true)?;
    let ca = CaFile { name: name.into(), public: vmm::random::hex(&key.verifying_key().to_bytes()), created: now_s() };
    write(&dir.join("ca.toml"), &toml_of(&ca), false)?;
    let crl = sign_crl(&ca, &key, Vec::new());
    write(&dir.join("crl.toml"), &toml_of(&crl), false)?;
    Ok(ca)
}

fn sign_crl(ca: &CaFile, key: &SigningKey, serials: Vec<String>) -> Revocations {
    let mut crl = Revocations { ca: ca.public.clone(), issued: now_s(), serials, signature: String::new() };
    crl.signature = vmm::random::hex(&key.sign(&crl.signed_bytes()).to_bytes());
    crl
}

/// `pathvm cert keygen`: a node's secrets (`DIR/NAME.key`, 0600) and its
/// public half (`DIR/NAME.pub.toml`, for the CA).
pub fn keygen(dir: &Path, name: &str) -> Result<PublicKeys, IdentityError> {
    std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io { path: dir.into(), source })?;
    let signing = SigningKey::from_bytes(&vmm::random::bytes::<32>());
    let link = x25519_dalek::StaticSecret::from(vmm::random::bytes::<32>());
    let keys = KeyFile {
        signing_secret: vmm::random::hex(&signing.to_bytes()),
        link_secret: vmm::random::hex(&link.to_bytes()),
    };
    write(&dir.join(format!("{name}.key")), &toml_of(&keys), true)?;
    let public = PublicKeys {
        signing_public: vmm::random::hex(&signing.verifying_key().to_bytes()),
        link_public: vmm::random::hex(x25519_dalek::PublicKey::from(&link).as_bytes()),
    };
    write(&dir.join(format!("{name}.pub.toml")), &toml_of(&public), false)?;
    Ok(public)
}

/// What `pathvm cert issue` certifies.
pub struct Issue<'a> {
    /// The node id.
    pub node: NodeId,
    /// Its host name.
    pub name: &'a str,
    /// Its addresses.
    pub addrs: &'a [String],
    /// Its public keys (from its `NAME.pub.toml`).
    pub keys: PublicKeys,
    /// Days valid from now.
    pub days: u64,
}

/// `pathvm cert issue`: the CA of `ca_dir` signs a certificate.
pub fn issue(ca_dir: &Path, what: Issue<'_>) -> Result<Certificate, IdentityError> {
    let (ca, key) = ca_of(ca_dir)?;
    for (k, what_key) in [(&what.keys.signing_public, "signing_public"), (&what.keys.link_public, "link_public")] {
        vmm::random::parse_hex32(k, what_key)
            .map_err(|msg| IdentityError::Invalid { path: PathBuf::from("the public keys"), msg })?;
    }
    let now = now_s();
    let mut cert = Certificate {
        serial: vmm::random::hex(&vmm::random::bytes::<16>()),
        ca: ca.public,
        node: what.node,
        name: what.name.into(),
        addrs: what.addrs.to_vec(),
        keys: what.keys,
        not_before: now.saturating_sub(300),
        not_after: now + what.days * 86_400,
        signature: String::new(),
    };
    let bytes =
        cert.signed_bytes().map_err(|msg| IdentityError::Invalid { path: PathBuf::from("the request"), msg })?;
    cert.signature = vmm::random::hex(&key.sign(&bytes).to_bytes());
    Ok(cert)
}

/// `pathvm ca revoke`: adds `cert`'s serial to the CA's list, re-signed.
pub fn revoke(ca_dir: &Path, cert: &Certificate) -> Result<Revocations, IdentityError> {
    let (ca, key) = ca_of(ca_dir)?;
    let path = ca_dir.join("crl.toml");
    let mut serials = if path.exists() { read::<Revocations>(&path)?.serials } else { Vec::new() };
    if !serials.contains(&cert.serial) {
        serials.push(cert.serial.clone());
    }
    let crl = sign_crl(&ca, &key, serials);
    write(&path, &toml_of(&crl), false)?;
    Ok(crl)
}

/// Writes a certificate (public: 0644).
pub fn write_cert(path: &Path, cert: &Certificate) -> Result<(), IdentityError> {
    write(path, &toml_of(cert), false)
}

/// Reads a certificate.
pub fn read_cert(path: &Path) -> Result<Certificate, IdentityError> {
    read(path)
}

/// Reads public keys.
pub fn read_public(path: &Path) -> Result<PublicKeys, IdentityError> {
    read(path)
}

/// A node configuration's `[identity]`: where its CA, certificate, keys,
/// the revocation list and the members' certificates are (relative paths
/// are relative to the configuration file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    /// The network CA (`ca.toml`).
    pub ca: PathBuf,
    /// The revocation list (`crl.toml`); absent: nothing is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
    /// This node's certificate.
    pub cert: PathBuf,
    /// This node's secrets (0600).
    pub key: PathBuf,
    /// A directory of the members' certificates (`*.crt.toml`).
    pub members: PathBuf,
}

/// What a checked identity gives a node: its secrets, the members'
/// public keys, and why members were left out.
#[derive(Debug)]
pub struct Membership {
    /// This node's Ed25519 link-state secret.
    pub signing_secret: [u8; 32],
    /// This node's X25519 link secret.
    pub link_secret: [u8; 32],
    /// Every valid member: node id, link-state public key, link public key.
    pub members: Vec<(NodeId, [u8; 32], [u8; 32])>,
    /// Every valid member's name and addresses, as its certificate says.
    pub hosts: Vec<(NodeId, String, Vec<String>)>,
    /// Certificates refused, with why (revoked, expired, another CA).
    pub refused: Vec<String>,
    /// The nodes those certificates name: a node links to none of them
    /// (it links to a node it has no certificate of once that node's
    /// hello shows a valid one).
    pub refused_nodes: Vec<NodeId>,
    /// What the agent checks certificates with and shows its own by.
    pub agent: guest_agent::node::IdentityConfig,
}

/// Checks node `me`'s identity under `spec` (paths relative to `base`).
pub fn load_membership(spec: &IdentitySpec, base: &Path, me: NodeId) -> Result<Membership, IdentityError> {
    let at = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    let ca: CaFile = read(&at(&spec.ca))?;
    let crl = match &spec.crl {
        Some(p) => {
            let crl: Revocations = read(&at(p))?;
            crl.check(&ca).map_err(|msg| IdentityError::Invalid { path: at(p), msg })?;
            Some(crl)
        }
        None => None,
    };
    let now = now_s();
    let cert_path = at(&spec.cert);
    let cert = read_cert(&cert_path)?;
    let refused = |why: String| IdentityError::Refused { path: cert_path.clone(), node: cert.node, why };
    cert.check(&ca, crl.as_ref(), now).map_err(refused)?;
    if cert.node != me {
        return Err(refused(format!("names node {}, but this config is node {me}", cert.node)));
    }
    let key_path = at(&spec.key);
    let keys: KeyFile = read(&key_path)?;
    let signing_secret = vmm::random::parse_hex32(&keys.signing_secret, "signing_secret")
        .map_err(|msg| IdentityError::Invalid { path: key_path.clone(), msg })?;
    let link_secret = vmm::random::parse_hex32(&keys.link_secret, "link_secret")
        .map_err(|msg| IdentityError::Invalid { path: key_path.clone(), msg })?;
    let public = vmm::random::hex(&SigningKey::from_bytes(&signing_secret).verifying_key().to_bytes());
    if public != cert.keys.signing_public {
        return Err(IdentityError::Invalid {
            path: key_path,
            msg: format!("is not the key of certificate {}", cert_path.display()),
        });
    }
    let dir = at(&spec.members);
    let entries = std::fs::read_dir(&dir).map_err(|source| IdentityError::Io { path: dir.clone(), source })?;
    let mut paths: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".crt.toml")).collect();
    paths.sort();
    let (mut members, mut refused_members, mut hosts, mut refused_nodes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for p in paths {
        let c = match read_cert(&p) {
            Ok(c) => c,
            Err(e) => {
                refused_members.push(e.to_string());
                continue;
            }
        };
        match c.check(&ca, crl.as_ref(), now) {
            Ok(()) if members.iter().any(|(n, _, _)| *n == c.node) => {
                refused_members.push(format!("{}: a second certificate for node {}", p.display(), c.node))
            }
            Ok(()) => {
                let k = vmm::random::parse_hex32(&c.keys.signing_public, "signing_public").expect("checked");
                let l = vmm::random::parse_hex32(&c.keys.link_public, "link_public").expect("checked");
                members.push((c.node, k, l));
                hosts.push((c.node, c.name.clone(), c.addrs.clone()));
            }
            Err(why) => {
                refused_nodes.push(c.node);
                refused_members.push(format!("{} (node {}): {why}", p.display(), c.node))
            }
        }
    }
    let invalid = |msg| IdentityError::Invalid { path: cert_path.clone(), msg };
    let agent = guest_agent::node::IdentityConfig {
        ca_public: vmm::random::parse_hex32(&ca.public, "the CA key").map_err(invalid)?,
        // Serials no certificate could carry cannot match one either.
        revoked: crl.iter().flat_map(|c| &c.serials).filter_map(|s| vmm::random::parse_hex(s, "serial").ok()).collect(),
        cert: cert.to_wire().map_err(invalid)?,
        link_secret,
    };
    Ok(Membership { signing_secret, link_secret, members, hosts, refused: refused_members, refused_nodes, agent })
}

/// The key of the link between node `me` and node `peer`, agreed from
/// `me`'s link secret and `peer`'s certified link key: the agent's rule
/// ([`guest_agent::routing::member::link_key`]), which a node uses for a
/// neighbour it learns from a hello. `None` for a low-order point.
pub fn link_key(my_secret: &[u8; 32], peer_public: &[u8; 32], me: NodeId, peer: NodeId) -> Option<[u8; 32]> {
    guest_agent::routing::member::link_key(my_secret, peer_public, me, peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue_for(ca: &Path, keys: &Path, node: NodeId, name: &str) -> Certificate {
        let public = keygen(keys, name).unwrap();
        let c = issue(ca, Issue { node, name, addrs: &["10.0.0.1".into()], keys: public, days: 30 }).unwrap();
        write_cert(&keys.join(format!("{name}.crt.toml")), &c).unwrap();
        c
    }

    #[test]
    fn a_certified_network_checks_its_members_and_honours_revocation() {
        let dir = std::env::temp_dir().join(format!("pathvm-identity-{}", std::process::id()));
        let (ca_dir, keys) = (dir.join("ca"), dir.join("nodes"));
        let ca = ca_init(&ca_dir, "test").unwrap();
        assert!(matches!(ca_init(&ca_dir, "again"), Err(IdentityError::Exists(_))), "a CA is never overwritten");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca_dir.join("ca.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let a = issue_for(&ca_dir, &keys, 1, "a");
        let b = issue_for(&ca_dir, &keys, 2, "b");
        assert_eq!(a.check(&ca, None, now_s()), Ok(()));
        assert!(a.check(&ca, None, a.not_after + 1).unwrap_err().contains("expired"));
        let mut forged = b.clone();
        forged.node = 1;
        assert!(forged.check(&ca, None, now_s()).unwrap_err().contains("signature"));
        let spec = IdentitySpec {
            ca: ca_dir.join("ca.toml"),
            crl: Some(ca_dir.join("crl.toml")),
            cert: keys.join("a.crt.toml"),
            key: keys.join("a.key"),
            members: keys.clone(),
        };
        let m = load_membership(&spec, &dir, 1).unwrap();
        assert_eq!(m.members.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(), vec![1, 2]);
        // Both ends agree on their link's key from the certificates alone.
        let spec_b0 = IdentitySpec { cert: keys.join("b.crt.toml"), key: keys.join("b.key"), ..spec.clone() };
        let mb = load_membership(&spec_b0, &dir, 2).unwrap();
        let a_side = link_key(&m.link_secret, &mb.members[1].2, 1, 2).unwrap();
        let b_side = link_key(&mb.link_secret, &m.members[0].2, 2, 1).unwrap();
        assert_eq!(a_side, b_side);
        assert_ne!(link_key(&m.link_secret, &mb.members[1].2, 1, 3), Some(a_side), "bound to the node ids");
        assert_eq!(link_key(&m.link_secret, &[0; 32], 1, 2), None, "a low-order point gives no key");
        assert!(load_membership(&spec, &dir, 2).unwrap_err().to_string().contains("this config is node 2"));
        let crl = revoke(&ca_dir, &b).unwrap();
        assert_eq!(crl.check(&ca), Ok(()));
        let m = load_membership(&spec, &dir, 1).unwrap();
        assert_eq!(m.members.len(), 1, "the revoked member is left out");
        assert!(m.refused[0].contains("revoked"), "{:?}", m.refused);
        let spec_b = IdentitySpec { cert: keys.join("b.crt.toml"), key: keys.join("b.key"), ..spec };
        assert!(load_membership(&spec_b, &dir, 2).unwrap_err().to_string().contains("revoked"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
