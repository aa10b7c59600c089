//! `pathvm ca` and `pathvm cert`: the network CA, node keys and
//! certificates, revocation ([`node::identity`]).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use node::identity::{self, Issue};

/// `pathvm ca …`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a network CA in DIR: ca.key (0600, keep it offline), ca.toml (give it to every node), crl.toml.
    Init(CaInitArgs),
    /// Revoke a node's certificate: its serial joins DIR/crl.toml (re-signed; give it to every node).
    Revoke(CaRevokeArgs),
}

/// Arguments of `pathvm ca init`.
#[derive(Debug, Args)]
pub struct CaInitArgs {
    /// The CA's directory (created).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The network's name.
    #[arg(long, default_value = "pathvm")]
    name: String,
}

/// Arguments of `pathvm ca revoke`.
#[derive(Debug, Args)]
pub struct CaRevokeArgs {
    /// The CA's directory.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The certificate to revoke.
    cert: PathBuf,
}

/// `pathvm cert …`.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a node's keys on the node: DIR/NAME.key (0600, stays there) and DIR/NAME.pub.toml (for the CA).
    Keygen(KeygenArgs),
    /// Sign a node's certificate with the CA (its id, name, addresses and public keys).
    Issue(IssueArgs),
    /// Check a certificate against a CA and its revocation list; exit 2 if it does not hold.
    Verify(VerifyArgs),
}

/// Arguments of `pathvm cert keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where the files go.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The node's host name.
    #[arg(long)]
    name: String,
}

/// Arguments of `pathvm cert issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The CA's directory.
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// The node's public keys (NAME.pub.toml from `pathvm cert keygen`).
    #[arg(long = "pub", value_name = "FILE")]
    public: PathBuf,
    /// The node id.
    #[arg(long)]
    node: u16,
    /// The node's host name.
    #[arg(long)]
    name: String,
    /// An address of the node (repeat).
    #[arg(long = "addr", value_name = "ADDR")]
    addrs: Vec<String>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=3650))]
    days: u64,
    /// Where to write it.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Arguments of `pathvm cert verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The CA's public file (ca.toml).
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// The revocation list (crl.toml).
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
    /// The certificate.
    cert: PathBuf,
}

/// Runs `pathvm ca …`.
pub fn run_ca(cmd: CaCommand) -> Result<i32, Box<dyn std::error::Error>> {
    match cmd {
        CaCommand::Init(a) => {
            let ca = identity::ca_init(&a.dir, &a.name)?;
            println!("CA {} created in {}: public key {}", ca.name, a.dir.display(), ca.public);
            println!(
                "keep {} secret and offline; give ca.toml and crl.toml to every node",
                a.dir.join("ca.key").display()
            );
        }
        CaCommand::Revoke(a) => {
            let cert = identity::read_cert(&a.cert)?;
            let crl = identity::revoke(&a.dir, &cert)?;
            println!(
                "revoked node {} ({}), serial {}; {} serials listed: copy {} to every node",
                cert.node,
                cert.name,
                cert.serial,
                crl.serials.len(),
                a.dir.join("crl.toml").display()
            );
        }
    }
    Ok(0)
}

/// Runs `pathvm cert …`.
pub fn run_cert(cmd: CertCommand) -> Result<i32, Box<dyn std::error::Error>> {
    match cmd {
        CertCommand::Keygen(a) => {
            let public = identity::keygen(&a.dir, &a.name)?;
            println!("keys for {} in {}: signing {}", a.name, a.dir.display(), public.signing_public);
            println!("send {} to the CA", a.dir.join(format!("{}.pub.toml", a.name)).display());
        }
        CertCommand::Issue(a) => {
            let keys = identity::read_public(&a.public)?;
            let cert =
                identity::issue(&a.ca, Issue { node: a.node, name: &a.name, addrs: &a.addrs, keys, days: a.days })?;
            identity::write_cert(&a.out, &cert)?;
            println!(
                "certificate for node {} ({}) in {}, serial {}",
                cert.node,
                cert.name,
                a.out.display(),
                cert.serial
            );
        }
        CertCommand::Verify(a) => {
            let ca: identity::CaFile =
                toml::from_str(&std::fs::read_to_string(&a.ca)?).map_err(|e| format!("{}: {e}", a.ca.display()))?;
            let crl = match &a.crl {
                Some(p) => {
                    let crl: identity::Revocations =
                        toml::from_str(&std::fs::read_to_string(p)?).map_err(|e| format!("{}: {e}", p.display()))?;
                    crl.check(&ca).map_err(|e| format!("{}: {e}", p.display()))?;
                    Some(crl)
                }
                None => None,
            };
            let cert = identity::read_cert(&a.cert)?;
            return Ok(match cert.check(&ca, crl.as_ref(), identity::now_s()) {
                Ok(()) => {
                    println!(
                        "{}: valid: node {} ({}), until {}",
                        a.cert.display(),
                        cert.node,
                        cert.name,
                        cert.not_after
                    );
                    0
                }
                Err(why) => {
                    println!("{}: refused: {why}", a.cert.display());
                    2
                }
            });
        }
    }
    Ok(0)
}
